// Builds the dashboard into the Python package (src/cloudai/web/), which the master
// serves at `/`. `npm ci && npm run build`; the Makefile and setup.py do it for you.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  build: {
    outDir: fileURLToPath(new URL("../src/cloudai/web", import.meta.url)),
    emptyOutDir: true,
    assetsDir: "assets",
    target: "es2022",
    sourcemap: false,
    reportCompressedSize: true,
  },
});
