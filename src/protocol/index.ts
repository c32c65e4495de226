/**
 * The Nix binary-cache formats: pure code, no file system, network or database.
 * This is the only import point of the protocol layer.
 */
export { parseCacheInfo, formatCacheInfo, type CacheInfo } from './cache-info.js'
export {
  MAX_CHECKPOINT_BYTES,
  formatCheckpointBody,
  noteKeyId,
  parseCheckpoint,
  signCheckpoint,
  verifyCheckpoint,
  type Checkpoint,
  type CheckpointNote,
  type NoteSignature,
} from './checkpoint.js'
export {
  COMPRESSION_EXTENSIONS,
  compressionOfExtension,
  isCompression,
  urlAgreesWithCompression,
  type Compression,
} from './compression.js'
export { NAR_FILE_NAME_PATTERN, NAR_URL_PATTERN, narFileName, narFileNameOf, narShardPath, parseNarFileName, narUrl, parseNarUrl } from './nar-file.js'
export {
  HASH_SIZES,
  parseNixHash,
  formatNixHash,
  formatSriHash,
  sha256Hash,
  nixHashEquals,
  type HashAlgorithm,
  type NixHash,
} from './hash.js'
export {
  MAX_NARINFO_BYTES,
  parseNarInfo,
  formatNarInfo,
  compareBytewise,
  type NarInfo,
} from './narinfo.js'
export { NarParser, DEFAULT_NAR_LIMITS, type NarLimits, type NarStats, type NarVisitor } from './nar/parser.js'
export { NarSink, HashingPassThrough, checkFinal, checkSize, sha256Of, type Expected, type Measured } from './nar/verify.js'
export {
  NIX32_ALPHABET,
  NIX32_CHAR_CLASS,
  encodeNix32,
  decodeNix32,
  isNix32,
  nix32Length,
} from './nixbase32.js'
export {
  isKeyName,
  parsePublicKey,
  formatPublicKey,
  parseSecretKey,
  formatSecretKey,
  generateSecretKey,
  toPublicKey,
  parseSignature,
  fingerprintNarInfo,
  signFingerprint,
  verifyFingerprint,
  validSigners,
  validSignatures,
  signatureKeyName,
  signNarInfo,
  type PublicKey,
  type SecretKey,
  type Signature,
} from './signature.js'
export {
  STORE_DIR,
  HASH_PART_LENGTH,
  HASH_PART_PATTERN,
  NAME_CHAR_CLASS,
  MAX_NAME_LENGTH,
  isHashPart,
  parseStorePath,
  parseStorePathBase,
  parseStorePathLoose,
  formatStorePath,
  formatStorePathBase,
  type StorePath,
} from './store-path.js'
export {
  DRV_OUTPUT_ID,
  DRV_OUTPUT_ID_PATTERN,
  MAX_REALISATION_BYTES,
  isDrvOutputId,
  parseRealisation,
  formatRealisation,
  fingerprintRealisation,
  validRealisationSignatures,
  signRealisation,
  type Realisation,
} from './realisation.js'
export { NarListingWriter, MAX_LISTING_BYTES } from './nar/listing.js'
export { parseS3Url, formatS3Location, normalisePrefix, type S3Location } from './s3-url.js'
