/**
 * Access control wired into the running enclave (issue 7): leases on ACL and
 * group documents between the nodes that serve keys and the nodes that own
 * the documents. The pure rules live in enclave/acl/. See docs/access-control.md.
 */
export {
  AccessService, accessClientOps, accessModeFromEnv, accessPeerOps, type AccessCaller, type AccessCheck, type AccessComponents, type AccessInit, type DocStore,
} from './service.ts';
export { leaseMs, takeoverWaitMs } from './constants.ts';
