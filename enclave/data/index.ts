// The data layer as a pure state machine (docs/consistency.md).
export { type BrokenFlags, type DataConfig, defaultDataConfig, expireBatchDefault, ownerLeaseTicks, ttlTicksMax, ttlTicksStretched, validateDataConfig } from './config.ts';
export { DataError, type DataErrorCode } from './errors.ts';
export { type DataCounters, DataNode, type DataNodeInit, newDataCounters, shardOf, shardStart } from './node.ts';
export * from './types.ts';
export { type DataDriverInit, DataDriver, type DataLog, type ReadMark } from './driver.ts';
export { logRecordToWire, peerBodyToWire, validateClientOp, validateLogRecord, validatePeerBody } from './codec.ts';
export { type ScanDecision, type ScanEntry, type ScanPage, type ScanQuery, type ScanView, scanEntryOverheadBytes, selectPage } from './scan.ts';
