import { request } from "node:http";

// Delivery to an event observer with stacks-node's semantics: every request is queued before it
// is sent, sent strictly in order, and retried with exponential backoff (plus jitter) until the
// observer answers HTTP 200. Nothing is ever skipped; a slow observer stalls delivery, not mining.

export class ObserverPusher {
  constructor(url, { minDelayMs = 50, maxDelayMs = 5000, log = () => {} } = {}) {
    this.url = url ? url.replace(/\/+$/, "") : null;
    this.queue = [];
    this.minDelayMs = minDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.log = log;
    this.delivered = 0;
    this.retries = 0;
    this.running = false;
    this.closed = false;
    this.idleWaiters = [];
  }

  push(path, payload) {
    if (!this.url || this.closed) return;
    this.queue.push({ path, body: JSON.stringify(payload) });
    if (!this.running) this.run();
  }

  async run() {
    this.running = true;
    while (this.queue.length && !this.closed) {
      const item = this.queue[0];
      let delay = this.minDelayMs;
      for (;;) {
        if (this.closed) break;
        try {
          const status = await post(this.url + item.path, item.body);
          if (status === 200) break;
          this.log(`observer answered ${status} to ${item.path}; retrying in ${delay} ms`);
        } catch (e) {
          this.log(`observer unreachable (${e.code ?? e.message}); retrying ${item.path} in ${delay} ms`);
        }
        this.retries++;
        await new Promise((r) => setTimeout(r, delay + Math.floor(Math.random() * delay * 0.2)));
        delay = Math.min(delay * 2, this.maxDelayMs);
      }
      if (this.closed) break;
      this.queue.shift();
      this.delivered++;
    }
    this.running = false;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Resolves once everything queued so far has been delivered. */
  idle() {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  close() {
    this.closed = true;
    for (const w of this.idleWaiters.splice(0)) w();
  }
}

/**
 * One POST on a fresh connection: a pooled keep-alive socket can be closed by the observer while
 * the node is busy mining, which would turn every long block into a spurious retry.
 */
function post(url, body) {
  return new Promise((resolvePost, reject) => {
    const req = request(url, {
      method: "POST",
      agent: false,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      timeout: 30000,
    });
    req.on("response", (res) => {
      res.resume();
      res.on("end", () => resolvePost(res.statusCode));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("observer timed out")));
    req.on("error", reject);
    req.end(body);
  });
}
