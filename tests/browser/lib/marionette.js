// A minimal client of Firefox's Marionette protocol (what geckodriver speaks to Firefox), enough to drive a
// page: playwright-core cannot drive Debian's firefox-esr, Marionette can, with no extra dependency.
//
// Wire format: each message is `LENGTH:JSON` (LENGTH = the JSON's byte length in decimal). On connect Firefox
// sends a hello object ({applicationType, marionetteProtocol}); then a command is `[0, id, name, params]` and
// its response `[1, id, error, result]` (error null on success, else {error, message, stacktrace}).
import net from 'node:net';

/** A Marionette command failed in Firefox. */
export class MarionetteError extends Error {
  /**
   * @param {string} command
   * @param {{error?: string, message?: string, stacktrace?: string}} err
   */
  constructor(command, err) {
    super(`${command}: ${err.error || 'error'}: ${err.message || ''}`);
    this.name = 'MarionetteError';
    this.error = err.error || 'error';
    this.stacktrace = err.stacktrace || '';
  }
}

/**
 * Split complete `LEN:JSON` messages off the front of `buf`.
 * @param {Buffer} buf
 * @returns {{messages: unknown[], rest: Buffer}}
 */
export function parseFrames(buf) {
  const messages = [];
  let rest = buf;
  for (;;) {
    const colon = rest.indexOf(0x3a); // ':'
    if (colon < 0) break;
    const lenText = rest.subarray(0, colon).toString('ascii');
    if (!/^\d+$/.test(lenText)) throw new Error(`bad Marionette frame header ${JSON.stringify(lenText.slice(0, 20))}`);
    const len = Number(lenText);
    if (rest.length < colon + 1 + len) break;
    messages.push(JSON.parse(rest.subarray(colon + 1, colon + 1 + len).toString('utf8')));
    rest = rest.subarray(colon + 1 + len);
  }
  return { messages, rest };
}

/**
 * @param {unknown} msg
 * @returns {Buffer}
 */
export function frame(msg) {
  const body = Buffer.from(JSON.stringify(msg), 'utf8');
  return Buffer.concat([Buffer.from(`${body.length}:`, 'ascii'), body]);
}

export class Marionette {
  /** @param {net.Socket} socket  connected, hello already read */
  constructor(socket) {
    /** @private */ this._socket = socket;
    /** @private */ this._nextId = 1;
    /** @private @type {Map<number, {name: string, resolve: (v: any) => void, reject: (e: Error) => void}>} */
    this._waiting = new Map();
    /** @private */ this._buf = Buffer.alloc(0);
    /** @type {string|null} */
    this.sessionId = null;
    socket.on('data', (d) => this._onData(d));
    const fail = (/** @type {Error} */ e) => {
      for (const w of this._waiting.values()) w.reject(new Error(`Marionette connection lost during ${w.name}: ${e.message}`));
      this._waiting.clear();
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('closed')));
  }

  /**
   * Connect (to a TCP port, or a Unix socket path such as a netns relay), retrying until Firefox answers
   * with its hello or `timeoutMs` passes.
   * @param {{port?: number, host?: string, path?: string, timeoutMs?: number}} where
   * @returns {Promise<Marionette>}
   */
  static async connect(where) {
    const deadline = Date.now() + (where.timeoutMs ?? 30000);
    /** @type {unknown} */
    let lastErr = null;
    while (Date.now() < deadline) {
      try {
        const socket = await openWithHello(where, Math.max(500, Math.min(5000, deadline - Date.now())));
        return new Marionette(socket);
      } catch (e) {
        lastErr = e;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    throw new Error(`no Marionette hello from ${where.path || `${where.host}:${where.port}`}: ${lastErr}`);
  }

  /** @private @param {Buffer} d */
  _onData(d) {
    const { messages, rest } = parseFrames(Buffer.concat([this._buf, d]));
    this._buf = rest;
    for (const m of messages) {
      if (!Array.isArray(m) || m[0] !== 1) continue;
      const [, id, err, result] = m;
      const w = this._waiting.get(id);
      if (!w) continue;
      this._waiting.delete(id);
      if (err) w.reject(new MarionetteError(w.name, err));
      else w.resolve(result);
    }
  }

  /**
   * Send one command and wait for its response.
   * @param {string} name     e.g. `WebDriver:Navigate`
   * @param {object} [params]
   * @returns {Promise<any>}
   */
  send(name, params = {}) {
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      this._waiting.set(id, { name, resolve, reject });
      this._socket.write(frame([0, id, name, params]));
    });
  }

  /**
   * @param {object} [capabilities]
   * @returns {Promise<any>}
   */
  async newSession(capabilities = {}) {
    const r = await this.send('WebDriver:NewSession', { capabilities: { alwaysMatch: capabilities } });
    this.sessionId = r.sessionId;
    return r;
  }

  /** @param {string} url */
  navigate(url) { return this.send('WebDriver:Navigate', { url }); }

  /**
   * Run `script` (a function body) in the page; `arguments[i]` are `args`; its return value comes back.
   * @param {string} script
   * @param {unknown[]} [args]
   */
  async execute(script, args = []) {
    const r = await this.send('WebDriver:ExecuteScript', { script, args });
    return r.value;
  }

  /**
   * Run `script` (a function body) in the page; it calls `arguments[arguments.length - 1](value)` to finish.
   * @param {string} script
   * @param {unknown[]} [args]
   * @param {number} [timeoutMs]  the script timeout for this call
   */
  async executeAsync(script, args = [], timeoutMs = 30000) {
    await this.send('WebDriver:SetTimeouts', { script: timeoutMs });
    const r = await this.send('WebDriver:ExecuteAsyncScript', { script, args });
    return r.value;
  }

  /**
   * Evaluate `expr`, an expression of the page yielding a value or a promise, in the page's own window (so
   * page globals such as `window.chorusDemo` are visible); the result travels as JSON.
   * @param {string} expr
   * @param {number} [timeoutMs]
   * @returns {Promise<any>}
   */
  async evaluate(expr, timeoutMs = 30000) {
    // Everything runs inside the page (eval of the page's window), down to the JSON, so only a string
    // crosses from the page's compartment to Marionette's sandbox.
    const pageCode = `Promise.resolve().then(() => (${expr})).then(
      (v) => JSON.stringify({ ok: true, v: v === undefined ? null : v }),
      (e) => JSON.stringify({ ok: false, e: String(e && e.stack || e) }))`;
    const script = `const done = arguments[arguments.length - 1];
      const w = window.wrappedJSObject || window;
      try {
        w.eval(arguments[0]).then((t) => done(String(t)), (e) => done(JSON.stringify({ ok: false, e: String(e) })));
      } catch (e) { done(JSON.stringify({ ok: false, e: String(e && e.stack || e) })); }`;
    const text = await this.executeAsync(script, [pageCode], timeoutMs);
    const r = JSON.parse(text);
    if (!r.ok) throw new Error(`page evaluation of ${expr.slice(0, 80)} failed: ${r.e}`);
    return r.v;
  }

  /**
   * @param {string} selector  a CSS selector
   * @returns {Promise<object>} the element reference
   */
  async findElement(selector) {
    const r = await this.send('WebDriver:FindElement', { using: 'css selector', value: selector });
    return r.value;
  }

  /** @param {object} element  a reference from findElement */
  async click(element) {
    const id = /** @type {any} */ (element)['element-6066-11e4-a52e-4f735466cecf'] || /** @type {any} */ (element).ELEMENT;
    return this.send('WebDriver:ElementClick', { id });
  }

  /** End the session and close the connection. */
  async close() {
    try { if (this.sessionId) await this.send('WebDriver:DeleteSession'); } catch { /* Firefox going away */ }
    this._socket.destroy();
  }
}

/**
 * @param {{port?: number, host?: string, path?: string}} where
 * @param {number} timeoutMs
 * @returns {Promise<net.Socket>}
 */
function openWithHello(where, timeoutMs) {
  return new Promise((resolve, reject) => {
    const socket = where.path ? net.connect(where.path) : net.connect(where.port || 2828, where.host || '127.0.0.1');
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => { socket.destroy(); reject(new Error('no hello')); }, timeoutMs);
    const onData = (/** @type {Buffer} */ d) => {
      buf = Buffer.concat([buf, d]);
      try {
        const { messages } = parseFrames(buf);
        if (messages.length === 0) return;
        const hello = /** @type {any} */ (messages[0]);
        clearTimeout(t);
        socket.off('data', onData);
        socket.off('close', onClose);
        if (!hello || hello.marionetteProtocol !== 3) {
          socket.destroy();
          reject(new Error(`unexpected Marionette hello ${JSON.stringify(hello)}`));
          return;
        }
        resolve(socket);
      } catch (e) {
        clearTimeout(t);
        socket.destroy();
        reject(e);
      }
    };
    const onClose = () => { clearTimeout(t); reject(new Error('closed before hello')); };
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.once('error', () => { /* close follows */ });
  });
}
