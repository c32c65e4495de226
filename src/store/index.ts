/** The LevelDB-indexed local store, the audit log, and decompression of stored NARs. */
export { Store, type NarInfoRecord, type NarFileRecord, type SourceRecord, type RecoveryReport } from './store.js'
export { createDecompressor, supportedCompressions } from './decompress.js'
export { AuditLog, auditLogPath, readAuditLog, verifyAuditLog, type AuditEntry, type AuditEvent, type AuditVerification } from './audit.js'
export { readAuditTail } from './audit-recent.js'
export { Verification, startVerifyThreads, stopVerifyThreads, type VerifiedNar } from './verifier.js'
