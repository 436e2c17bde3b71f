// Types of keyward-partner's ESM entry point: the same declarations as index.d.ts.
export * from "./index.js";
import * as keyward from "./index.js";
export default keyward;
