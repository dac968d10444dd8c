// @vitest-environment node
// The import boundaries of eslint.config.js, checked on small snippets.
import { ESLint } from "eslint";

const eslint = new ESLint({ cwd: new URL("../..", import.meta.url).pathname });

async function restricted(filePath: string, code: string): Promise<boolean> {
  const [result] = await eslint.lintText(code, { filePath });
  return result.messages.some((m) => m.ruleId === "no-restricted-imports");
}

describe("import boundaries", () => {
  it("keep lib/ and components/ out of the features and the app", async () => {
    expect(await restricted("src/lib/x.ts", 'import "@/features/models/stores/models-store";\n')).toBe(true);
    expect(await restricted("src/components/ui/x.tsx", 'import "../../features/models/types";\n')).toBe(true);
    expect(await restricted("src/lib/x.ts", 'import "@/app/app";\n')).toBe(true);
    expect(await restricted("src/lib/x.ts", 'import "@/components/ui/button";\n')).toBe(false);
  });

  it("keep each feature out of the others", async () => {
    expect(await restricted("src/features/models/api/x.ts", 'import "@/features/system/stores/system-store";\n')).toBe(true);
    expect(await restricted("src/features/models/api/x.ts", 'import "../../system/types";\n')).toBe(true);
    expect(await restricted("src/features/models/api/x.ts", 'import "@/features/models/types";\n')).toBe(false);
    expect(await restricted("src/features/models/api/x.ts", 'import "../stores/models-store";\n')).toBe(false);
    expect(await restricted("src/features/models/api/x.ts", 'import "@/lib/api-client";\n')).toBe(false);
  });

  it("let the app compose the features", async () => {
    expect(await restricted("src/app/x.tsx", 'import "@/features/models/types";\nimport "@/features/system/types";\n')).toBe(false);
  });
});
