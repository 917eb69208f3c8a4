/** The only pino import. The CLI builds one root logger; components get children. */
import { pino, type Logger as PinoLogger, type LoggerOptions } from 'pino';

export type Logger = PinoLogger;

export interface CreateLoggerOptions {
  level?: string;
  /** Write to this fd (default 2: logs go to stderr, stdout stays for command output). */
  fd?: number;
}

export function createLogger(opts: CreateLoggerOptions = {}): Logger {
  const options: LoggerOptions = {
    level: opts.level ?? process.env['TRICKLE_LOG'] ?? 'info',
    base: null,
  };
  return pino(options, pino.destination({ fd: opts.fd ?? 2, sync: true }));
}

/** A logger that drops everything, for tests and library use without a CLI. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** A logger that hands each JSON line to `sink` (tests that check what an operator is told). */
export function lineLogger(sink: (line: string) => void, level = 'info'): Logger {
  return pino({ level, base: null }, { write: (s: string) => sink(s) });
}

/**
 * Warnings that anyone in radio range can cause (dropped frames, refused handshakes): each kind
 * (`key`) is logged at most once per interval, with the number not logged since (`suppressed`).
 * `gate` is a util/throttle.ts Throttle (log.ts imports nothing of the project).
 */
export function throttledWarn(log: Logger, gate: (key: string, report: (suppressed: number) => void) => void): (key: string, fields: Record<string, unknown>, msg: string) => void {
  return (key, fields, msg) => gate(key, (suppressed) => log.warn({ ...fields, ...(suppressed > 0 ? { suppressed } : {}) }, msg));
}
