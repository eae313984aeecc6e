/**
 * One line of progress redrawn in place on a terminal: `step 120/600 |######----| loss 0.4123
 * acc 0.9120 5230 tok/s ETA 42 s`. What `train` shows on a TTY (plain lines elsewhere).
 */

/** A stream a bar can redraw on. */
export interface BarStream {
  write(text: string): unknown;
  columns?: number;
}

const BAR = 24;

/** Seconds as `42 s`, `3 min 05 s` or `1 h 02 min`. */
export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '-';
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor(s / 60) % 60).padStart(2, '0')} min`;
}

/** The bar's text for `value` of `total`, with `fields` after it. */
export function barLine(value: number, total: number, fields: string, eta: string): string {
  const done = total > 0 ? Math.min(BAR, Math.round(BAR * value / total)) : 0;
  return `step ${value}/${total} |${'#'.repeat(done)}${'-'.repeat(BAR - done)}| ${fields} ETA ${eta}`;
}

/** A progress bar on `stream`: update it with the step reached, stop it once to end the line. */
export class ProgressBar {
  private started = Date.now();
  private first = 0;
  private drawn = false;
  private stopped = false;

  constructor(private readonly stream: BarStream, private total: number) {}

  /** Redraws the bar at `value` (of `total`, which a resumed run may change). */
  update(value: number, fields: string, total = this.total): void {
    if (this.stopped) return;
    if (!this.drawn) {
      this.first = value;
      this.started = Date.now();
    }
    this.total = total;
    const perStep = (Date.now() - this.started) / 1000 / Math.max(1, value - this.first);
    const eta = value > this.first ? formatEta(perStep * (this.total - value)) : '-';
    const line = barLine(value, this.total, fields, eta);
    const width = this.stream.columns ?? 120;
    this.stream.write(`\r${line.slice(0, width - 1).padEnd(Math.min(width - 1, line.length + 8))}`);
    this.drawn = true;
  }

  /** Ends the bar's line; later updates are ignored. */
  stop(): void {
    if (this.drawn && !this.stopped) this.stream.write('\n');
    this.stopped = true;
  }
}
