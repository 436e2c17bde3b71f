// The ESM entry point: the same implementation as index.cjs.
import keyward from "./index.cjs";

export const {
  sign,
  signCanonical,
  message,
  messageCanonical,
  isWellFormedKey,
  KeywardError,
  PartnerClient,
  Verifier,
  verifyMiddleware,
  PATHS,
} = keyward;
export default keyward;
