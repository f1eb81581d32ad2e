// The SDK's types: chorus.js and demo.js type-check (`// @ts-check`, JSDoc) with the pinned TypeScript, and
// chorus.js has a wire-message typedef for every message of docs/protocol.md, both ways. Needs no server and
// no browser. (Its error-code lists are checked against the server's ErrorCode by signaling's unit tests.)
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const WEB = join(ROOT, 'clients', 'web');
const SDK = readFileSync(join(WEB, 'chorus.js'), 'utf8');
const PROTOCOL_DOC = readFileSync(join(ROOT, 'docs', 'protocol.md'), 'utf8');

/**
 * The `### \`type\`` headings of one `## ...` section of docs/protocol.md.
 * @param {string} section the section's heading text
 * @returns {string[]}
 */
function documentedTypes(section) {
  const start = PROTOCOL_DOC.indexOf(`\n## ${section}\n`);
  assert.notEqual(start, -1, `docs/protocol.md has no "## ${section}" section`);
  const next = PROTOCOL_DOC.indexOf('\n## ', start + 1);
  const text = PROTOCOL_DOC.slice(start, next === -1 ? undefined : next);
  return [...text.matchAll(/^### `([a-z_]+)`$/gm)].map((m) => m[1]);
}

/**
 * The wire `type` of each member of a union typedef of chorus.js (`@typedef {A | B} Name`), through each
 * member's own typedef (`@typedef {object} A` with `@property {'a'} type`).
 * @param {string} union
 * @returns {string[]}
 */
function sdkUnionTypes(union) {
  const m = SDK.match(new RegExp(`@typedef \\{([^}]*)\\} ${union}\\b`));
  assert.ok(m, `chorus.js has no @typedef ${union}`);
  const members = m[1].replace(/\s*\*\s*/g, ' ').split('|').map((s) => s.trim());
  return members.map((member) => {
    const block = SDK.match(new RegExp(`@typedef \\{object\\} ${member}\\n((?: \\* .*\\n)*)`));
    assert.ok(block, `chorus.js has no @typedef {object} ${member}`);
    const type = block[1].match(/@property \{'([a-z_]+)'\} type\b/);
    assert.ok(type, `@typedef ${member} has no literal \`type\` property`);
    return type[1];
  });
}

/**
 * Run the pinned tsc over files of clients/web (one run: demo.js imports chorus.js anyway). `--strict`, as
 * TypeScript 7 has it by default: `npx -p typescript tsc` outside tests/browser fetches the newest one.
 * @param {string[]} files
 */
async function typeCheck(files) {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const args = [tsc, '--noEmit', '--allowJs', '--checkJs', '--strict', '--target', 'es2020', '--lib', 'es2020,dom',
    ...files.map((file) => join(WEB, file))];
  try {
    await promisify(execFile)(process.execPath, args, { cwd: ROOT, timeout: 120000 });
  } catch (e) {
    const err = /** @type {{stdout?: string, stderr?: string, message: string}} */ (e);
    assert.fail(`tsc failed:\n${err.stdout || ''}${err.stderr || ''}${err.stdout ? '' : err.message}`);
  }
}

describe('chorus.js types', () => {
  it('chorus.js and demo.js are // @ts-check', () => {
    for (const file of ['chorus.js', 'demo.js']) {
      const first = readFileSync(join(WEB, file), 'utf8').split('\n')[0];
      assert.equal(first, '// @ts-check', file);
    }
  });

  it('ClientMessage has a typedef for every client message of docs/protocol.md', () => {
    assert.deepEqual(sdkUnionTypes('ClientMessage').sort(), documentedTypes('Client → server').sort());
  });

  it('ServerMessage has a typedef for every server message of docs/protocol.md', () => {
    assert.deepEqual(sdkUnionTypes('ServerMessage').sort(), documentedTypes('Server → client').sort());
  });

  it('chorus.js and demo.js type-check with tsc --strict', { timeout: 120000 },
    () => typeCheck(['chorus.js', 'demo.js']));
});
