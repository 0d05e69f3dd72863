"""The Python LanceDB client's side of the interoperability test
(tests/it/interop.rs): it creates the seed-shaped table before the crate
migrates it, and afterwards reads, appends and searches as a Python service
would. Run with the Python client under test (scripts/python-client.sh).

    client.py create DB          # documents: text, 384-d vector (with a
                                 # registered embedding function), two
                                 # columns the crate does not know, IVF_PQ
    client.py check DB config    # after AddColumns + ReEmbed(768) given the
                                 # client configuration + RebuildIndex
    client.py check DB none      # the same, ReEmbed given none
    client.py read DB TABLE      # reads every row of TABLE ("read N rows")

Every check is an assert: a failure exits non-zero with its message.
"""

import json
import math
import sys

import lancedb
import numpy as np
from lancedb.embeddings import TextEmbeddingFunction, get_registry, register
from lancedb.index import IvfPq
from lancedb.pydantic import LanceModel, Vector

ROWS = 600
MASK = (1 << 64) - 1


def document_text(i: int) -> str:
    # testing::document_text
    return f"document {i}: the quick brown fox number {i} jumps over lazy dog {i % 7}"


def hash_vector(text: str, dims: int) -> list:
    """testing::TestEmbedding::vector: FNV-1a of the text seeds xorshift."""
    seed = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        seed = ((seed ^ b) * 0x100000001B3) & MASK
    out = []
    for _ in range(dims):
        seed ^= (seed << 13) & MASK
        seed ^= seed >> 7
        seed ^= (seed << 17) & MASK
        out.append(np.float32(seed >> 40) / np.float32(1 << 24) * np.float32(2) - np.float32(1))
    v = np.array(out, dtype=np.float32)
    norm = max(float(np.sqrt(np.sum(v * v, dtype=np.float32))), float(np.finfo(np.float32).eps))
    return (v / np.float32(norm)).tolist()


@register("hash-embed")
class HashEmbed(TextEmbeddingFunction):
    """The Rust tests' deterministic embedder, as a registered function."""

    dims: int = 384

    def ndims(self):
        return self.dims

    def generate_embeddings(self, texts):
        return [hash_vector(str(t), self.dims) for t in texts]


def create(path: str) -> None:
    func = get_registry().get("hash-embed").create(dims=384)

    class Doc(LanceModel):
        id: int
        text: str = func.SourceField()
        vector: Vector(384) = func.VectorField()
        tag: str
        score: float

    db = lancedb.connect(path)
    table = db.create_table("documents", schema=Doc)
    table.add([row(i) for i in range(ROWS)])
    table.create_index(
        "vector", config=IvfPq(distance_type="l2", num_partitions=2, num_sub_vectors=16)
    )
    print(f"created {table.count_rows()} rows, indexes {[i.index_type for i in table.list_indices()]}")


def row(i: int) -> dict:
    return {"id": i, "text": document_text(i), "tag": f"t{i % 5}", "score": i / 10}


def check(path: str, mode: str) -> None:
    db = lancedb.connect(path)
    table = db.open_table("documents")
    data = table.to_arrow().sort_by("id").to_pylist()
    assert len(data) == ROWS, f"{len(data)} rows"
    for i, r in enumerate(data):
        # Every original value as Python wrote it, the new columns as the
        # crate filled them.
        assert r["id"] == i and r["text"] == document_text(i), r["id"]
        assert r["tag"] == f"t{i % 5}" and math.isclose(r["score"], i / 10), r
        assert r["category"] == "general", r["category"]
        assert r["created_at"].endswith("Z") and r["created_at"] == data[0]["created_at"]
        want = hash_vector(document_text(i), 768)
        assert len(r["vector"]) == 768, len(r["vector"])
        worst = max(abs(a - b) for a, b in zip(r["vector"], want))
        assert worst < 1e-5, f"vector of row {i} differs by {worst}"
    indexes = {tuple(i.columns): i.index_type for i in table.list_indices()}
    assert indexes.get(("vector",)) == "IvfPq", indexes
    assert indexes.get(("id",)) == "BTree", indexes

    # Search by vector, through the rebuilt index.
    hits = table.search(hash_vector(document_text(42), 768)).limit(5).refine_factor(10).to_list()
    assert 42 in [h["id"] for h in hits], [h["id"] for h in hits]

    configs = table.embedding_functions
    if mode == "config":
        # Text queries are embedded with the new model's configuration.
        assert configs["vector"].function.dims == 768, configs
        hits = table.search(document_text(7)).limit(5).to_list()
        assert 7 in [h["id"] for h in hits], [h["id"] for h in hits]
        # Appends in the old schema are embedded by the new model too.
        table.add([row(ROWS)])
        added = table.search().where(f"id = {ROWS}").to_list()[0]
        assert len(added["vector"]) == 768 and added["category"] is None
    else:
        # No configuration: the client has no function for the column and
        # refuses text queries instead of embedding them with the old model.
        assert "vector" not in configs, configs
        try:
            table.search(document_text(7)).limit(5).to_list()
        except Exception as e:  # the client's own error, whatever its class
            print(f"text query refused: {type(e).__name__}: {e}")
        else:
            raise AssertionError("a text query was embedded without a configuration")
        table.add([dict(row(ROWS), vector=hash_vector(document_text(ROWS), 768))])
    # Appends in the new schema.
    table.add(
        [
            dict(
                row(ROWS + 1),
                vector=hash_vector(document_text(ROWS + 1), 768),
                category="news",
                created_at="2026-12-02T00:00:00.000000Z",
            )
        ]
    )
    assert table.count_rows() == ROWS + 2

    ledger = db.open_table("_lancedb_migrations").to_arrow().to_pylist()
    statuses = {r["id"]: r["status"] for r in ledger}
    assert set(statuses.values()) == {"applied"}, statuses
    details = json.loads([r for r in ledger if r["id"] == "0002_reembed"][0]["details"])
    print(f"checked ({mode}): ledger {sorted(statuses)}, re-embed details {details}")


def check_verbs(path: str) -> None:
    """After RenameColumn vector -> embedding, text -> body and DropColumns tag."""
    db = lancedb.connect(path)
    table = db.open_table("documents")
    data = table.to_arrow().sort_by("id").to_pylist()
    assert len(data) == ROWS, f"{len(data)} rows"
    assert list(data[0].keys()) == ["id", "body", "embedding", "score"], list(data[0].keys())
    for i, r in enumerate(data):
        assert r["id"] == i and r["body"] == document_text(i), r["id"]
        assert math.isclose(r["score"], i / 10), r
        worst = max(abs(a - b) for a, b in zip(r["embedding"], hash_vector(document_text(i), 384)))
        assert worst < 1e-5, f"vector of row {i} differs by {worst}"
    indexes = {tuple(i.columns): i.index_type for i in table.list_indices()}
    assert indexes.get(("embedding",)) == "IvfPq", indexes
    # The embedding configuration follows the renames: text queries and
    # appends without a vector are embedded from `body` into `embedding`.
    configs = table.embedding_functions
    assert "embedding" in configs and configs["embedding"].source_column == "body", configs
    hits = table.search(document_text(7), vector_column_name="embedding").limit(5).to_list()
    assert 7 in [h["id"] for h in hits], [h["id"] for h in hits]
    table.add([{"id": ROWS, "body": document_text(ROWS), "score": 1.0}])
    added = table.search().where(f"id = {ROWS}").to_list()[0]
    worst = max(abs(a - b) for a, b in zip(added["embedding"], hash_vector(document_text(ROWS), 384)))
    assert worst < 1e-5, f"the appended row's vector differs by {worst}"
    print(f"checked (verbs): {table.count_rows()} rows, indexes {indexes}")


if __name__ == "__main__":
    command, path = sys.argv[1], sys.argv[2]
    if command == "create":
        create(path)
    elif command == "check":
        check(path, sys.argv[3])
    elif command == "check-verbs":
        check_verbs(path)
    elif command == "read":
        rows = lancedb.connect(path).open_table(sys.argv[3]).to_arrow().num_rows
        print(f"read {rows} rows")
    else:
        raise SystemExit(f"unknown command {command}")
