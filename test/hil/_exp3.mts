import { openSerialLink } from '../../src/link/serial.ts';
import { createPtyPair } from '../../src/link/pty.ts';
let fails = 0;
for (let i = 0; i < 300; i++) {
  const p = await createPtyPair();
  const a = await openSerialLink(p.a);
  const closed = new Promise<string>((r) => a.onClose((e) => r(e?.message ?? 'clean')));
  console.error('=== KILL', i);
  process.kill(p.pid, 'SIGKILL');
  const res = await Promise.race([closed, new Promise<string>((r) => setTimeout(() => r('TIMEOUT'), 3000))]);
  if (res === 'TIMEOUT') { fails++; console.error('=== TIMEOUT at', i, p.devices); console.log('timeout', i); process.exit(1); }
  await a.close(); await p.close();
}
console.log('fails', fails);
