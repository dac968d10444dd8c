// ESLint (flat config): typescript-eslint, the React hooks rules, and the layout's
// import boundaries (bulletproof-react): `lib/` and `components/` never import a
// feature or the app, and a feature never imports another feature or the app.
import { readdirSync } from "node:fs";
import js from "@eslint/js";
import reactHooks from "eslint-plugin-react-hooks";
import globals from "globals";
import tseslint from "typescript-eslint";

const features = readdirSync(new URL("./src/features", import.meta.url), { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => entry.name);

const noApp = { group: ["@/app", "@/app/**"], message: "Only src/app/ wires the features together." };
const noFeatures = {
  group: ["@/features", "@/features/**", "**/features/**"],
  message: "Shared code (lib/, components/) never imports a feature: pass what it needs in, or move it to the feature.",
};

/** A feature may import its own files, `@/lib`, `@/components` and `@/test`, never another feature. */
function featureBoundary(feature) {
  return {
    files: [`src/features/${feature}/**/*.{ts,tsx}`],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            noApp,
            {
              group: ["@/features/*", `!@/features/${feature}`, "@/features/*/**", `!@/features/${feature}/**`],
              message: "Features never import each other: let src/app/ compose them.",
            },
            {
              group: ["../../**"],
              message: "Reach outside this feature's folders through `@/` (and never into another feature).",
            },
          ],
        },
      ],
    },
  };
}

export default tseslint.config(
  { ignores: ["dist", "node_modules", "e2e/artifacts", "src/lib/api-schema.d.ts"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  reactHooks.configs.flat.recommended,
  {
    files: ["src/**/*.{ts,tsx}"],
    languageOptions: { globals: { ...globals.browser } },
  },
  {
    // The browser test also runs functions inside the page (page.evaluate).
    files: ["e2e/**/*.mjs", "*.config.{js,ts}"],
    languageOptions: { globals: { ...globals.node, ...globals.browser } },
  },
  {
    files: ["src/lib/**/*.{ts,tsx}", "src/components/**/*.{ts,tsx}"],
    rules: { "no-restricted-imports": ["error", { patterns: [noApp, noFeatures] }] },
  },
  ...features.map(featureBoundary),
);
