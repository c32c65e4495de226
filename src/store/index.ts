/** The LevelDB-indexed local store, the audit log, and decompression and verification of stored NARs. */
export { Store, type NarInfoRecord, type NarFileRecord, type OpenOptions, type SourceRecord, type RecoveryReport } from './store.js'
export { createDecompressor, inProcessDecodersInUse, supportedCompressions, XZ_IN_PROCESS_MAX_DECODERS } from './decompress.js'
export { AuditLog, auditLogPath, readAuditLog, verifyAuditLog, type AuditEntry, type AuditEvent, type AuditVerification } from './audit.js'
export { Verification, startVerifyThreads, stopVerifyThreads, type VerifiedNar } from './verifier.js'
export { NarFileCheck, checkNarFile, type CheckedNarFile, type NarFileCheckOptions, type NarFileSpec } from './nar-check.js'
export { classifyNarError, isUncheckable, type NarErrorContext } from './nar-errors.js'
