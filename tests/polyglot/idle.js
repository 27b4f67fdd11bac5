// A connection the daemon closes while idle is replaced by the next call (issue 19, item 1).
//
//     node tests/polyglot/idle.js SOCKET
//
// The daemon under test closes idle connections after 1 s. tests/polyglot.rs runs it.
'use strict';
const path = require('path');
const { Client } = require(path.join(__dirname, '..', '..', 'client', 'node', 'latchkey.js'));

(async () => {
  const client = new Client(process.argv[2]);
  if ((await client.health()).status !== 'ok') throw new Error('first health');
  await new Promise((resolve) => setTimeout(resolve, 2500));
  if ((await client.health()).status !== 'ok') throw new Error('the call after the idle close failed');
  client.close();
  console.log('the call after the idle close went on a new connection');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
