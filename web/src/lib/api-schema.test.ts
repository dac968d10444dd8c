// @vitest-environment node
//! Drift check: `api-schema.d.ts` is what `npm run gen:api` makes from the
//! committed `openapi.json` today (the same generator and options as the script).
import { readFileSync } from "node:fs";
import openapiTS, { astToString, COMMENT_HEADER } from "openapi-typescript";

const documentUrl = new URL("../../../openapi.json", import.meta.url);
const schemaUrl = new URL("./api-schema.d.ts", import.meta.url);

test("the generated API types match the committed openapi.json", async () => {
  const generated = COMMENT_HEADER + astToString(await openapiTS(documentUrl));
  const committed = readFileSync(schemaUrl, "utf8");
  expect(committed === generated, "web/src/lib/api-schema.d.ts is stale: run `npm run gen:api` in web/").toBe(true);
});
