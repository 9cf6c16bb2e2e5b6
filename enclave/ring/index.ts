// The Chord ring core: a pure state machine plus its arithmetic and placement helpers.
export * from './constants.ts';
export { type RingConfig, defaultRingConfig, validateConfig } from './config.ts';
export { RingError, type RingErrorCode } from './errors.ts';
export type { DropReason, LookupFailure, LookupMode, RingEvent } from './events.ts';
export {
  betweenOpen, betweenRightIncl, distance, fingerStart, floorLog2, idFromBytes, idMask, idSpace, idToBytes, isId,
  keyId, nodeIdFromPublicKey, shortId,
} from './id.ts';
export * from './messages.ts';
export { RingNode, type Ready, type RingNodeInit, type RingStatus } from './node.ts';
export { handoffOnJoin, inRange, type KeyRange, replicaSet, replicatedRange, responsibleRange } from './placement.ts';
export { closestPreceding, orderSuccessors, route, type Route } from './routing.ts';
