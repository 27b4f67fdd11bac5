'use strict';
// The real latchkeyd for tests (LATCHKEYD names the binary): one per test, in a temporary
// directory, restartable on the same socket. Used by this package's tests and the Express
// example's.

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const latchkey = require('..');

const BINARY = process.env.LATCHKEYD;

/** A daemon in a temporary directory, which `restart` stops and starts on the same socket. */
class Daemon {
  constructor() {
    assert.ok(BINARY, 'set LATCHKEYD to the latchkeyd binary (cargo test -p latchkeyd --test polyglot does)');
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'latchkey-node-'));
    this.socket = path.join(this.dir, 'latchkey.sock');
    this.config = path.join(this.dir, 'config.toml');
    fs.writeFileSync(this.config, [
      '[server]', `socket = ${JSON.stringify(this.socket)}`, 'allow_root = true',
      '[store]', `data_dir = ${JSON.stringify(path.join(this.dir, 'data'))}`, '',
    ].join('\n'));
    this.log = fs.openSync(path.join(this.dir, 'daemon.log'), 'a');
    this.child = null;
  }

  async start() {
    // In its directory: mail from the file transport lands there.
    this.child = spawn(BINARY, ['--config', this.config], { stdio: ['ignore', this.log, this.log], cwd: this.dir });
    const probe = new latchkey.Client(this.socket, { retries: 0, timeout: 1000 });
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        await probe.health();
        probe.close();
        return;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`the daemon did not answer within 20 s: ${e.message}\n${this.logText()}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  async stop() {
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    await exited;
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  logText() {
    return fs.readFileSync(path.join(this.dir, 'daemon.log'), 'utf8');
  }
}

module.exports = { Daemon };
