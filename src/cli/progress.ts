import { Presets, SingleBar } from "cli-progress";

/** Copy progress on stderr: a bar with counts and rate on a terminal, a plain line about once a second otherwise. */
export class Progress {
  copied = 0;
  skipped = 0;
  readonly #total: number;
  readonly #started = Date.now();
  readonly #bar: SingleBar | undefined;
  #lastLine = Date.now();

  constructor(total: number) {
    this.#total = total;
    if (process.stderr.isTTY) {
      this.#bar = new SingleBar(
        {
          stream: process.stderr,
          format:
            "{bar} {value}/{total} sessions | {copied} copied, {skipped} skipped | {rate}/s | ETA {eta_formatted}",
          hideCursor: true,
          etaBuffer: 100,
        },
        Presets.shades_classic,
      );
      this.#bar.start(total, 0, this.#payload());
    }
  }

  /** One session done. */
  tick(copied: boolean): void {
    if (copied) this.copied++;
    else this.skipped++;
    if (this.#bar) {
      this.#bar.update(this.copied + this.skipped, this.#payload());
    } else if (Date.now() - this.#lastLine >= 1000) {
      this.#lastLine = Date.now();
      process.stderr.write(`${this.#line()}\n`);
    }
  }

  /** Ends the bar (or prints the last plain line). */
  stop(): void {
    if (this.#bar) {
      this.#bar.update(this.copied + this.skipped, this.#payload());
      this.#bar.stop();
    } else {
      process.stderr.write(`${this.#line()}\n`);
    }
  }

  #rate(): string {
    const seconds = (Date.now() - this.#started) / 1000;
    return seconds > 0 ? ((this.copied + this.skipped) / seconds).toFixed(0) : "0";
  }

  #payload(): { copied: number; skipped: number; rate: string } {
    return { copied: this.copied, skipped: this.skipped, rate: this.#rate() };
  }

  #line(): string {
    const done = this.copied + this.skipped;
    return `copy: ${done}/${this.#total} sessions, ${this.copied} copied, ${this.skipped} skipped, ${this.#rate()}/s`;
  }
}
