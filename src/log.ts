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

/**
 * Warnings about input from the air (dropped frames, refused handshakes): anyone in radio range
 * can cause them, so each kind is logged at most once per interval. The first occurrence of a
 * key is logged at once; later ones within the interval are counted and reported with the next
 * one logged (`suppressed`: how many were not logged since). Counters for the status page are
 * kept by the layers themselves; this only bounds the log.
 */
export type ThrottledLog = (key: string, fields: Record<string, unknown>, msg: string) => void;

export function throttledWarn(log: Logger, intervalMs = 60_000, now: () => number = Date.now): ThrottledLog {
  const seen = new Map<string, { lastMs: number; suppressed: number }>();
  return (key, fields, msg) => {
    const t = now();
    const s = seen.get(key);
    if (s !== undefined && t - s.lastMs < intervalMs) {
      s.suppressed++;
      return;
    }
    if (seen.size > 1024 && s === undefined) seen.clear(); // keys are codes, never attacker strings; a bound anyway
    log.warn({ ...fields, ...(s !== undefined && s.suppressed > 0 ? { suppressed: s.suppressed } : {}) }, msg);
    seen.set(key, { lastMs: t, suppressed: 0 });
  };
}
