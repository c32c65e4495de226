/** The LevelDB-indexed local store, the audit log, and decompression and verification of stored NARs. */
export { Store, type NarInfoRecord, type NarFileRecord, type RealisationRecord, type SourceRecord, type RecoveryReport } from './store.js'
export { createDecompressor, supportedCompressions } from './decompress.js'
export { AuditLog, auditLogPath, readAuditLog, verifyAuditLog, type AuditEntry, type AuditEvent, type AuditLogOptions, type AuditVerification } from './audit.js'
export { auditCheckpointPath, compareWithCheckpoint, CHECKPOINT_INTERVAL_MS, type ChainFacts, type CheckpointComparison } from './audit-checkpoint.js'
export { listTornTails, type TornTail } from './audit-tail.js'
export { Verification, startVerifyThreads, stopVerifyThreads, type VerifiedNar } from './verifier.js'
export { NarFileCheck, checkNarFile, type CheckedNarFile, type NarFileCheckOptions, type NarFileSpec } from './nar-check.js'
export { classifyNarError, isUncheckable, type NarErrorContext } from './nar-errors.js'
