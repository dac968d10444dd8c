import { validateCustomName, validateLocalPath, validateRepoId } from "./validation";

describe("validateRepoId", () => {
  it.each(["test-org/tiny-llama", "HuggingFaceTB/SmolLM2-135M", "a/b", "meta-llama/Llama-3.2-1B", "org_1/model.v2", `${"a".repeat(96)}/b`])(
    "accepts %s",
    (id) => expect(validateRepoId(id)).toBeNull(),
  );

  it.each([
    ["", /Enter/],
    ["tiny-llama", /owner\/name/],
    ["a/b/c", /exactly one slash/],
    ["/b", /Owner is empty/],
    ["a/", /Name is empty/],
    ["a b/c", /only contain/],
    ["-org/model", /start or end/],
    ["org/model.", /start or end/],
    ["org/mo--del", /"--"/],
    ["org/mo..del", /"\.\."/],
    [`${"a".repeat(97)}/b`, /96/],
  ])("rejects %j", (id, message) => expect(validateRepoId(id)).toMatch(message));
});

describe("validateLocalPath", () => {
  it("wants an absolute path", () => {
    expect(validateLocalPath("/models/x")).toBeNull();
    expect(validateLocalPath("models/x")).toMatch(/absolute/);
    expect(validateLocalPath("")).toMatch(/Enter/);
  });
});

describe("validateCustomName", () => {
  it("allows up to 100 characters", () => {
    expect(validateCustomName("x".repeat(100))).toBeNull();
    expect(validateCustomName("x".repeat(101))).toMatch(/100/);
  });
});
