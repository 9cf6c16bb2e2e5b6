// The list of commands. One line per command file.
import type { Command } from 'commander';

export const commands: Array<(program: Command) => void> = [];
