//! The `minilm` feature: `SentenceTransformer` with the real
//! all-MiniLM-L6-v2 files, and its load errors.
//!
//! The tests that need the model look for it in `$LANCEDB_MIGRATE_MINILM`,
//! else in `~/.cache/lancedb-migrate/models/all-MiniLM-L6-v2`, where
//! `scripts/fetch-minilm.sh` puts it. Without it they print why they are
//! skipped and pass; with `LANCEDB_MIGRATE_MINILM` set (as `.ci/run` does
//! after fetching) a missing model fails them instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use lancedb::embeddings::EmbeddingFunction;
use lancedb::query::{ExecutableQuery, QueryBase};
use lancedb_migrate::embeddings::minilm::{
    MODEL_DIR_ENV as MODEL_ENV, ModelError, SentenceTransformer, default_model_dir,
};
use lancedb_migrate::testing::{self, TestEmbedding};
use lancedb_migrate::{Migrator, ReEmbed};

/// The model directory, or `None` (with a message) when it is not there
/// and not required.
pub(crate) fn model_dir() -> Option<PathBuf> {
    let dir = default_model_dir();
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os(MODEL_ENV).is_none(),
        "{MODEL_ENV}={} holds no model.safetensors; run scripts/fetch-minilm.sh {0}",
        dir.display()
    );
    eprintln!(
        "SKIPPED: all-MiniLM-L6-v2 is not in {}; run scripts/fetch-minilm.sh to fetch it \
         (or set {MODEL_ENV} to its directory)",
        dir.display()
    );
    None
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The example of the model card (sentence-transformers' documentation):
/// `model.similarity(embeddings, embeddings)` prints 0.6660, 0.1046 and
/// 0.1411 for these three sentences.
#[test]
fn model_card_similarities() {
    let Some(dir) = model_dir() else { return };
    let model = SentenceTransformer::from_dir(&dir).unwrap();
    assert_eq!(model.dimension(), 384);
    assert_eq!(model.max_tokens(), 256);
    let dir_name = dir.canonicalize().unwrap();
    let dir_name = dir_name.file_name().unwrap().to_str().unwrap();
    assert_eq!(model.name(), dir_name, "named after its directory");

    let sentences = [
        "The weather is lovely today.",
        "It's so sunny outside!",
        "He drove to the stadium.",
    ];
    let e = model.embed(&sentences).unwrap();
    assert_eq!(e.len(), 3);
    for v in &e {
        assert_eq!(v.len(), 384);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "normalised, got norm {norm}");
    }
    for (i, j, published) in [(0, 1, 0.6660), (0, 2, 0.1046), (1, 2, 0.1411)] {
        let got = cosine(&e[i], &e[j]);
        eprintln!("similarity of sentences {i} and {j}: {got:.4} (published {published})");
        assert!(
            (got - published).abs() < 1e-3,
            "similarity of {i} and {j}: published {published}, got {got}"
        );
    }

    // One text alone gives the same vector as within a batch of others
    // (different padding), and NULL texts get NULL vectors.
    let alone = model.embed(&[sentences[2]]).unwrap();
    let max_diff = alone[0]
        .iter()
        .zip(&e[2])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-5, "batch-independent, got {max_diff}");
    let texts: ArrayRef = Arc::new(StringArray::from(vec![Some(sentences[0]), None]));
    let vectors = model.compute_source_embeddings(texts).unwrap();
    let vectors = vectors.as_fixed_size_list();
    assert_eq!(vectors.len(), 2);
    assert!(vectors.is_valid(0) && vectors.is_null(1));
    let first = vectors.value(0);
    let first = first.as_primitive::<Float32Type>().values();
    assert!(first.iter().zip(&e[0]).all(|(a, b)| (a - b).abs() < 1e-5));
}

const SENTENCES: &[&str] = &[
    "The cat sat quietly on the warm windowsill.",
    "Our team released a new version of the database engine.",
    "Fresh bread stays soft longer in a paper bag.",
    "The football match was postponed because of heavy rain.",
    "She planted tomatoes and basil in the back garden.",
    "The central bank raised interest rates by a quarter point.",
    "Penguins huddle together to survive the Antarctic winter.",
    "He practised the violin every evening before dinner.",
    "The train to Edinburgh leaves from platform four.",
    "A strong cup of coffee helps me wake up in the morning.",
    "The museum opened an exhibition of ancient Egyptian art.",
    "Regular exercise lowers the risk of heart disease.",
];

/// A table of the sentences above with placeholder 384-d vectors.
async fn sentences_table(db: &lancedb::Connection) -> lancedb::Table {
    let placeholder = TestEmbedding::new("placeholder", 384);
    let texts: ArrayRef = Arc::new(StringArray::from(SENTENCES.to_vec()));
    let vectors = placeholder
        .compute_source_embeddings(texts.clone())
        .unwrap();
    let ids = Int64Array::from_iter_values(0..SENTENCES.len() as i64);
    let batch = RecordBatch::try_new(
        testing::documents_schema(384),
        vec![Arc::new(ids), texts, vectors],
    )
    .unwrap();
    db.create_table("docs", batch).execute().await.unwrap()
}

/// Re-embeds a small table with the real model: it verifies, every row's
/// vector is the model's embedding of its text, the model is recorded, and
/// semantic queries now find the right sentence.
#[tokio::test]
async fn reembed_with_the_real_model() {
    let Some(dir) = model_dir() else { return };
    let model = Arc::new(
        SentenceTransformer::from_dir(&dir)
            .unwrap()
            .named("all-MiniLM-L6-v2"),
    );
    let db = testing::memory_db().await.unwrap();
    let table = sentences_table(&db).await;

    let report = Migrator::new(db.clone())
        .add(
            ReEmbed::new("0002_minilm", "docs", model.clone())
                .batch_size(5)
                .verify_sample(SENTENCES.len()),
        )
        .run()
        .await
        .unwrap();
    assert_eq!(report.applied().count(), 1);

    table.checkout_latest().await.unwrap();
    let schema = table.schema().await.unwrap();
    let field = schema.field_with_name("vector").unwrap();
    assert_eq!(field.data_type(), &testing::vector_type(384));
    assert_eq!(
        field.metadata().get(ReEmbed::MODEL_KEY).map(String::as_str),
        Some("all-MiniLM-L6-v2")
    );

    let batches = crate::support::rows(&table, &["id", "text", "vector"]).await;
    let mut rows = 0;
    for batch in &batches {
        let texts = batch.column(1).as_string::<i32>();
        let vectors = batch.column(2).as_fixed_size_list();
        for i in 0..batch.num_rows() {
            let stored = vectors.value(i);
            let stored = stored.as_primitive::<Float32Type>().values();
            let fresh = &model.embed(&[texts.value(i)]).unwrap()[0];
            let diff = stored
                .iter()
                .zip(fresh)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-5, "row {i}: stored vector differs by {diff}");
            rows += 1;
        }
    }
    assert_eq!(rows, SENTENCES.len());

    for (query, expected) in [
        ("How do I keep a loaf from going stale?", 2),
        ("Which birds live near the South Pole?", 6),
        ("monetary policy and inflation", 5),
        ("Where do I catch my rail connection to Scotland?", 8),
    ] {
        assert_eq!(
            nearest(&table, &model, query).await,
            SENTENCES[expected],
            "query {query:?}"
        );
    }
}

/// The text of the row nearest to `query` embedded with `model`.
async fn nearest(table: &lancedb::Table, model: &SentenceTransformer, query: &str) -> String {
    let q = &model.embed(&[query]).unwrap()[0];
    let batches: Vec<RecordBatch> = table
        .query()
        .nearest_to(q.as_slice())
        .unwrap()
        .limit(1)
        .execute()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let batch = batches.iter().find(|b| b.num_rows() > 0).unwrap();
    let texts = batch.column_by_name("text").unwrap().as_string::<i32>();
    texts.value(0).to_owned()
}

/// A directory without the model's files: `Read`, naming the file and how
/// to fetch the model. Needs no model.
#[test]
fn missing_files_say_how_to_fetch_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let err = SentenceTransformer::from_dir(dir.path()).unwrap_err();
    let ModelError::Read { path, .. } = &err else {
        panic!("expected Read, got {err:?}")
    };
    assert_eq!(path, &dir.path().join("config.json"));
    assert!(err.to_string().contains("scripts/fetch-minilm.sh"), "{err}");
}

/// Writes a BERT config.json (all-MiniLM-L6-v2's shape) into `dir`.
fn write_config(dir: &Path) {
    std::fs::write(
        dir.join("config.json"),
        r#"{"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
            "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
            "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "model_type": "bert"}"#,
    )
    .unwrap();
}

/// Pooling modes other than mean and CLS are refused by name, and a broken
/// config.json is `Invalid`. Needs no model.
#[test]
fn unsupported_pooling_and_bad_config_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
    std::fs::write(
        dir.path().join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 384, "pooling_mode_max_tokens": true}"#,
    )
    .unwrap();
    let err = SentenceTransformer::from_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ModelError::Unsupported { reason, .. } if reason.contains("pooling_mode_max_tokens")),
        "{err:?}"
    );

    std::fs::write(dir.path().join("config.json"), r#"{"hidden_size": "wide"}"#).unwrap();
    let err = SentenceTransformer::from_dir(dir.path()).unwrap_err();
    assert!(
        matches!(
            &err,
            ModelError::Invalid {
                what: "BERT config.json",
                ..
            }
        ),
        "{err:?}"
    );
}

/// Weights that do not match config.json are `Invalid`, not a panic at the
/// first embedding.
#[test]
fn weights_that_do_not_match_the_config_are_refused() {
    let Some(model) = model_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        model.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::copy(
        model.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(model.join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        config.replace("\"hidden_size\": 384", "\"hidden_size\": 768"),
    )
    .unwrap();
    let err = SentenceTransformer::from_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ModelError::Invalid { path, .. } if path.ends_with("model.safetensors")),
        "{err:?}"
    );
}
