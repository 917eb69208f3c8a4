/** Moved to src/net/radio-stack.ts (issue 12); this re-export goes once every importer follows. */
export * from '../net/radio-stack.ts';
