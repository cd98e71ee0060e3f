// The Node.js mysql2 driver program of the client matrix (tests/clients/run.py speaks
// to it; protocol at the top of run.py): query (text), execute (server-side prepared),
// multipleStatements, the pool, changeUser (COM_CHANGE_USER), the query timeout option.
'use strict';
const fs = require('fs');
const readline = require('readline');
const mysql = require('mysql2/promise');

const E = process.env;
const NAME = E.CL_NAME || 'mysql2node';
const opts = (target, extra) => ({
  host: E.CL_HOST, port: Number(target === 'direct' ? E.CL_DIRECT_PORT : E.CL_BATON_PORT),
  user: E.CL_USER, password: E.CL_PASSWORD, database: E.CL_DB, ...extra,
});
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function value(v) {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) return '0x' + v.toString('hex');
  if (v instanceof Date) return v.toISOString();
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

// One result set or OK as {cols, rows} / {affected}.
function one(rows, fields) {
  if (!fields) return { affected: rows.affectedRows };
  return { cols: fields.map((f) => `${f.name} ${f.columnType}`), rows: rows.map((r) => r.map(value)) };
}

function results([rows, fields]) {
  const multi = Array.isArray(fields) && fields.length > 0 && (fields[0] === undefined || Array.isArray(fields[0]));
  return multi ? rows.map((r, i) => one(r, fields[i])) : [one(rows, fields)];
}

function param(p) {
  const [k, v] = [p[0], p.slice(2)];
  return { i: () => Number(v), d: () => Number(v), s: () => v, b: () => Buffer.from(v, 'hex'), n: () => null }[k]();
}

const error = (e) => ({ error: e.errno || 0, state: e.sqlState, msg: e.sqlMessage || e.code || String(e) });

async function check(target) {
  const c = await mysql.createConnection(opts(target, { multipleStatements: true, rowsAsArray: true }));
  for (const line of fs.readFileSync(E.CL_CASES, 'utf8').split('\n')) {
    if (line.startsWith('#') || !line.trim()) continue;
    const [name, mode, raw, ...params] = line.split('\t');
    const sql = raw.replaceAll('{t}', `cl_${NAME}`);
    try {
      const r = mode === 'prep' ? await c.execute(sql, params.map(param)) : await c.query(sql);
      out({ case: name, out: results(r) });
    } catch (e) {
      out({ case: name, out: error(e) });
    }
  }
  const t = `cl_${NAME}_types`;
  await c.beginTransaction();
  await c.query(`INSERT INTO ${t} (id) VALUES (10)`);
  await c.rollback();
  await c.beginTransaction();
  await c.query(`INSERT INTO ${t} (id) VALUES (11)`);
  await c.commit();
  out({ case: 'tx', out: results(await c.query(`SELECT id FROM ${t} WHERE id IN (10, 11)`)) });
  await c.ping();
  await c.query('SET SESSION wait_timeout = 77');
  await c.changeUser({ user: E.CL_USER, password: E.CL_PASSWORD, database: E.CL_DB });
  out({ case: 'change_user', out: results(await c.query('SELECT @@session.wait_timeout = @@global.wait_timeout, DATABASE()')) });
  await c.end();
  const pool = mysql.createPool(opts(target, { connectionLimit: 2, rowsAsArray: true }));
  const seen = [];
  for (let i = 0; i < 4; i++) {
    const pc = await pool.getConnection();
    seen.push(results(await pc.query('SELECT DATABASE(), @@autocommit')));
    seen.push(results(await pc.execute('SELECT ? + 1', [i])));
    pc.release();
  }
  out({ case: 'pool', out: seen });
  await pool.end();
}

async function timed(fn) {
  const t0 = Date.now();
  try {
    const [rows] = await fn();
    return { value: value(rows[0][0]), error: null, ms: Date.now() - t0 };
  } catch (e) {
    return { value: null, error: e.errno || e.code || 'error', ms: Date.now() - t0 };
  }
}

async function cancel() {
  // KILL QUERY <threadId from the handshake> from a second connection; a bystander on a third.
  const [victim, by, killer] = await Promise.all([0, 1, 2].map(() => mysql.createConnection(opts('baton', { rowsAsArray: true }))));
  const kill = sleep(500).then(() => killer.query(`KILL QUERY ${victim.threadId}`));
  const [v, b] = await Promise.all([timed(() => victim.query('SELECT SLEEP(5)')), timed(() => by.query('SELECT SLEEP(2)')), kill]);
  const [[after]] = await victim.query('SELECT 1');
  out({ case: 'kill', out: { victim: v, bystander: b, after: value(after[0]) } });
  await Promise.all([victim.end(), by.end(), killer.end()]);
  // The query timeout option (the driver gives up on the connection), through its pool.
  const pool = mysql.createPool(opts('baton', { connectionLimit: 2, rowsAsArray: true }));
  const r = await timed(() => pool.query({ sql: 'SELECT SLEEP(5)', timeout: 1000 }));
  r.after = value((await pool.query('SELECT 1'))[0][0][0]);
  out({ case: 'timeout', out: r });
  await pool.end();
}

let writer;
async function op(kind, seq, gtid) {
  writer = writer || mysql.createPool(opts('baton', { connectionLimit: 2, rowsAsArray: true }));
  const c = await writer.getConnection();
  try {
    const ins = (s) => `INSERT INTO cl_rows (driver, seq, kind) VALUES ('${NAME}', ${s}, '${kind}')`;
    if (kind === 'text') await c.query(ins(seq));
    else if (kind === 'prep') await c.execute('INSERT INTO cl_rows (driver, seq, kind) VALUES (?, ?, ?)', [NAME, seq, 'prep']);
    else {
      await c.beginTransaction();
      try {
        await c.query(ins(seq));
        await c.query(ins(-seq));
        await c.commit();
      } catch (e) {
        await c.rollback().catch(() => {});
        throw e;
      }
    }
    return gtid ? (await c.query('SELECT @@last_gtid'))[0][0][0] : null;
  } finally {
    c.release();
  }
}

async function write(stop) {
  const kinds = ['text', 'prep', 'tx'];
  for (let seq = 1; !fs.existsSync(stop); seq++) {
    const k = kinds[seq % 3];
    try {
      await op(k, seq, false);
      out({ ack: seq, k });
    } catch (e) {
      out({ fail: seq, k, code: e.errno || 0, msg: e.message, t: Date.now() });
    }
    await sleep(10);
  }
}

// A session left idle until the file exists (run.py makes it right after the crash), then SELECT 1.
async function probe(path) {
  const c = await mysql.createConnection(opts('baton', { rowsAsArray: true }));
  c.on('error', () => {});
  await c.query('SELECT 1');
  while (!fs.existsSync(path)) await sleep(5);
  out({ probe: await timed(() => c.query('SELECT 1')) });
  c.destroy();
}

async function main() {
  out({ driver: NAME, version: require('mysql2/package.json').version });
  for await (const line of readline.createInterface({ input: process.stdin })) {
    const [cmd, arg] = line.trim().split(' ');
    if (cmd === 'quit') break;
    try {
      if (cmd === 'check') await check(arg);
      else if (cmd === 'cancel') await cancel();
      else if (cmd === 'probe') await probe(arg);
      else if (cmd === 'gtid') out({ gtid: await op(arg, 0, true) });
      else if (cmd === 'write') await write(arg);
    } catch (e) {
      out({ error: `${cmd}: ${e.stack || e}` });
    }
    out({ done: cmd });
  }
  process.exit(0);
}

main();
