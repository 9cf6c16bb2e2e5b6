/** Limits of the enclave-side access-control core. */

/** Principals whose group-derived rights one ACL remembers between group changes; cleared when full. */
export const groupRightsCacheEntriesMax = 65_536;
/** Groups one GroupStore holds (each up to groupMembersMax members). */
export const groupsMax = 100_000;
