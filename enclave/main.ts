// The enclave image entry point (bundled into dist/enclave.mjs).
export {};
