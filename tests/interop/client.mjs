// The TypeScript LanceDB client's side of the interoperability test
// (tests/it/interop.rs), as tests/interop/client.py is Python's: it creates
// the seed-shaped table before the crate migrates it, and afterwards reads,
// appends and searches as a Node.js service would. Run with the client
// under test (scripts/typescript-client.sh prints its directory):
//
//   node client.mjs CLIENT_DIR create DB        # documents: text, 384-d vector
//                                                # (registered embedding function),
//                                                # two columns the crate does not
//                                                # know, IVF_PQ
//   node client.mjs CLIENT_DIR check DB config  # after AddColumns + ReEmbed(768)
//                                                # with the client configuration
//                                                # + RebuildIndex
//   node client.mjs CLIENT_DIR check DB none    # the same, ReEmbed given none
//   node client.mjs CLIENT_DIR check-verbs DB   # after FillColumn (label), RenameColumn
//                                                # (vector -> embedding, text -> body),
//                                                # CastColumn (score -> float32) and
//                                                # DropColumns (tag)
//   node client.mjs CLIENT_DIR read DB TABLE    # reads every row ("read N rows")
//
// Every check is an assert: a failure exits non-zero with its message.

import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";

const [clientDir, command, db, mode] = process.argv.slice(2);
// `read` takes a table name where `check` takes a mode.
const require = createRequire(path.join(path.resolve(clientDir), "package.json"));
const lancedb = require("@lancedb/lancedb");
const { getRegistry, LanceSchema, TextEmbeddingFunction } = require("@lancedb/lancedb/embedding");
const arrow = require("apache-arrow");

const ROWS = 600;
const MASK = (1n << 64n) - 1n;

// testing::document_text
const documentText = (i) =>
  `document ${i}: the quick brown fox number ${i} jumps over lazy dog ${i % 7}`;

// testing::TestEmbedding::vector: FNV-1a of the text seeds xorshift.
function hashVector(text, dims) {
  let seed = 0xcbf29ce484222325n;
  for (const b of new TextEncoder().encode(text)) {
    seed = ((seed ^ BigInt(b)) * 0x100000001b3n) & MASK;
  }
  const out = new Float32Array(dims);
  for (let i = 0; i < dims; i++) {
    seed ^= (seed << 13n) & MASK;
    seed ^= seed >> 7n;
    seed ^= (seed << 17n) & MASK;
    out[i] = Math.fround(Math.fround(Number(seed >> 40n) / 16777216) * 2 - 1);
  }
  let sum = 0;
  for (const x of out) sum += x * x;
  const norm = Math.max(Math.sqrt(sum), 1.1920929e-7);
  return Array.from(out, (x) => Math.fround(x / norm));
}

// The Rust tests' deterministic embedder, as a registered function.
class HashEmbed extends TextEmbeddingFunction {
  constructor(options = { dims: 384 }) {
    super();
    const resolved = this.resolveVariables(options);
    this.dims = resolved.dims ?? 384;
  }
  ndims() {
    return this.dims;
  }
  async generateEmbeddings(texts) {
    return texts.map((t) => hashVector(String(t), this.dims));
  }
}
getRegistry().register("hash-embed")(HashEmbed);

const row = (i) => ({ id: i, text: documentText(i), tag: `t${i % 5}`, score: i / 10 });

async function create() {
  const func = getRegistry().get("hash-embed").create({ dims: 384 });
  const schema = LanceSchema({
    id: new arrow.Int64(),
    text: func.sourceField(),
    vector: func.vectorField(),
    tag: new arrow.Utf8(),
    score: new arrow.Float64(),
  });
  const conn = await lancedb.connect(db);
  const table = await conn.createEmptyTable("documents", schema);
  const rows = [];
  for (let i = 0; i < ROWS; i++) rows.push(row(i));
  await table.add(rows);
  await table.createIndex("vector", {
    config: lancedb.Index.ivfPq({ distanceType: "l2", numPartitions: 2, numSubVectors: 16 }),
  });
  const indices = (await table.listIndices()).map((i) => i.indexType);
  console.log(`created ${await table.countRows()} rows, indexes ${indices}`);
}

async function check() {
  const conn = await lancedb.connect(db);
  const table = await conn.openTable("documents");
  const data = (await table.query().toArray())
    .map((r) => r.toJSON())
    .sort((a, b) => Number(a.id) - Number(b.id));
  assert.equal(data.length, ROWS);
  data.forEach((r, i) => {
    // Every original value as TypeScript wrote it, the new columns as the
    // crate filled them.
    assert.equal(Number(r.id), i);
    assert.equal(r.text, documentText(i));
    assert.equal(r.tag, `t${i % 5}`);
    assert.ok(Math.abs(r.score - i / 10) < 1e-9, `score ${r.score}`);
    assert.equal(r.category, "general");
    assert.ok(r.created_at.endsWith("Z") && r.created_at === data[0].created_at, r.created_at);
    const vector = Array.from(r.vector);
    assert.equal(vector.length, 768);
    const want = hashVector(documentText(i), 768);
    const worst = Math.max(...vector.map((x, j) => Math.abs(x - want[j])));
    assert.ok(worst < 1e-5, `vector of row ${i} differs by ${worst}`);
  });
  const indexes = Object.fromEntries(
    (await table.listIndices()).map((i) => [i.columns.join(","), i.indexType]),
  );
  assert.equal(indexes.vector, "IvfPq", JSON.stringify(indexes));
  assert.equal(indexes.id, "BTree", JSON.stringify(indexes));

  // Search by vector, through the rebuilt index.
  const byVector = await table
    .vectorSearch(hashVector(documentText(42), 768))
    .limit(5)
    .refineFactor(10)
    .toArray();
  assert.ok(byVector.map((h) => Number(h.id)).includes(42), "vector search");

  const metadata = (await table.schema()).metadata.get("embedding_functions");
  const configs = metadata ? JSON.parse(metadata) : [];
  const forVector = configs.find((c) => (c.vectorColumn ?? c.vector_column) === "vector");
  if (mode === "config") {
    // Text queries are embedded with the new model's configuration, which
    // this client reads from the entry the crate rewrote.
    assert.equal(forVector?.model?.dims, 768, metadata);
    const byText = await table.search(documentText(7)).limit(5).toArray();
    assert.ok(byText.map((h) => Number(h.id)).includes(7), "text search");
    // Appends in the old schema are embedded by the new model too.
    await table.add([row(ROWS)]);
    const added = (await table.query().where(`id = ${ROWS}`).toArray())[0].toJSON();
    assert.equal(Array.from(added.vector).length, 768);
    assert.equal(added.category, null);
  } else {
    // No configuration: the client has no function for the column and
    // refuses text queries instead of embedding them with the old model.
    assert.equal(forVector, undefined, metadata);
    let refused = null;
    try {
      await table.search(documentText(7)).limit(5).toArray();
    } catch (e) {
      refused = e;
    }
    assert.ok(refused, "a text query was embedded without a configuration");
    console.log(`text query refused: ${refused.message}`);
    await table.add([{ ...row(ROWS), vector: hashVector(documentText(ROWS), 768) }]);
  }
  // Appends in the new schema.
  await table.add([
    {
      ...row(ROWS + 1),
      vector: hashVector(documentText(ROWS + 1), 768),
      category: "news",
      created_at: "2026-12-02T00:00:00.000000Z",
    },
  ]);
  assert.equal(await table.countRows(), ROWS + 2);

  const ledger = (await (await conn.openTable("_lancedb_migrations")).query().toArray()).map((r) =>
    r.toJSON(),
  );
  const statuses = Object.fromEntries(ledger.map((r) => [r.id, r.status]));
  assert.deepEqual([...new Set(Object.values(statuses))], ["applied"], JSON.stringify(statuses));
  const details = JSON.parse(ledger.find((r) => r.id === "0002_reembed").details);
  console.log(`checked (${mode}): ledger ${Object.keys(statuses).sort()}, re-embed details ${JSON.stringify(details)}`);
}

async function checkVerbs() {
  const conn = await lancedb.connect(db);
  const table = await conn.openTable("documents");
  const data = (await table.query().toArray())
    .map((r) => r.toJSON())
    .sort((a, b) => Number(a.id) - Number(b.id));
  assert.equal(data.length, ROWS);
  assert.deepEqual(Object.keys(data[0]).sort(), ["body", "embedding", "id", "label", "score"]);
  const fields = Object.fromEntries((await table.schema()).fields.map((f) => [f.name, f.type]));
  assert.equal(String(fields.score), "Float32", String(fields.score));
  data.forEach((r, i) => {
    assert.equal(Number(r.id), i);
    assert.equal(r.body, documentText(i));
    assert.equal(r.label, `T${i % 5}`);
    assert.equal(r.score, Math.fround(i / 10), `score ${r.score}`);
    const vector = Array.from(r.embedding);
    const want = hashVector(documentText(i), 384);
    const worst = Math.max(...vector.map((x, j) => Math.abs(x - want[j])));
    assert.ok(worst < 1e-5, `vector of row ${i} differs by ${worst}`);
  });
  const indexes = Object.fromEntries(
    (await table.listIndices()).map((i) => [i.columns.join(","), i.indexType]),
  );
  assert.equal(indexes.embedding, "IvfPq", JSON.stringify(indexes));
  // The embedding configuration followed the renames, in this client's
  // own keys: text queries and appends without a vector are embedded from
  // `body` into `embedding`.
  const metadata = (await table.schema()).metadata.get("embedding_functions");
  const entry = JSON.parse(metadata)[0];
  assert.equal(entry.sourceColumn ?? entry.source_column, "body", metadata);
  assert.equal(entry.vectorColumn ?? entry.vector_column, "embedding", metadata);
  const byText = await table.search(documentText(7)).limit(5).toArray();
  assert.ok(byText.map((h) => Number(h.id)).includes(7), "text search");
  await table.add([{ id: ROWS, body: documentText(ROWS), score: 1.5, label: "X" }]);
  const added = (await table.query().where(`id = ${ROWS}`).toArray())[0].toJSON();
  const worst = Math.max(
    ...Array.from(added.embedding).map((x, j) => Math.abs(x - hashVector(documentText(ROWS), 384)[j])),
  );
  assert.ok(worst < 1e-5, `the appended row's vector differs by ${worst}`);
  console.log(`checked (verbs): ${await table.countRows()} rows, indexes ${JSON.stringify(indexes)}`);
}

if (command === "create") {
  await create();
} else if (command === "check") {
  await check();
} else if (command === "check-verbs") {
  await checkVerbs();
} else if (command === "read") {
  const table = await (await lancedb.connect(db)).openTable(mode);
  const rows = await table.query().toArray();
  console.log(`read ${rows.length} rows`);
} else {
  throw new Error(`unknown command ${command}`);
}
