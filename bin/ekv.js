#!/usr/bin/env node
// The `ekv` command. The sources are TypeScript run through tsx's loader, so a
// fresh clone needs no compile step beyond `npm ci`.
import { register } from 'tsx/esm/api';

register();
await import('../cli/main.ts');
