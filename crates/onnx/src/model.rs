//! Loading a model: read, check its SHA-256 against the compiled-in manifest, parse, and
//! optimise one plan per input size (tract runs ~13× slower on symbolic shapes).
//!
//! Parsing can wait for the first run ([`load_on_first_use`]): a daemon with no camera
//! then holds no model in memory (most of its idle RSS otherwise), while every file is
//! still checked at start, and checked again when it is parsed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tract_onnx::prelude::*;

use crate::OnnxError;

/// `sha256  file` lines for every shipped model, from `models/SHA256SUMS`.
pub const MANIFEST: &str = include_str!("../../../models/SHA256SUMS");

/// The SHA-256 the manifest expects for a model file name.
pub fn expected_sha256(file: &str) -> Option<&'static str> {
    MANIFEST.lines().find_map(|line| {
        let (sum, name) = line.split_once(char::is_whitespace)?;
        (name.trim().trim_start_matches('*') == file).then_some(sum)
    })
}

type Plan = TypedRunnableModel;

/// Model outputs, in graph order, as plain arrays whichever backend ran them.
pub type Outputs = Vec<tract_ndarray::ArrayD<f32>>;

/// Which engine runs the models.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Backend {
    /// tract: pure Rust, always there, cross-builds anywhere.
    Tract,
    /// ONNX Runtime, loaded at run time from this `libonnxruntime.so`.
    Ort(PathBuf),
}

impl Backend {
    /// ONNX Runtime when its library is found (`ORT_DYLIB_PATH`, then the places the
    /// setup script and packages put it), else tract.
    pub fn detect() -> Backend {
        crate::ort_backend::find_library().map_or(Backend::Tract, Backend::Ort)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Tract => "tract",
            Backend::Ort(_) => "onnxruntime",
        }
    }
}

enum Engine {
    Tract { proto: Box<InferenceModel>, plans: Mutex<HashMap<(u32, u32), Arc<Plan>>> },
    Ort(crate::ort_backend::OrtModel),
}

/// Whether models loaded from now on are parsed at their first run rather than at load.
static ON_FIRST_USE: AtomicBool = AtomicBool::new(false);

/// From now on, models are checked when loaded but parsed only when first run (or
/// [`OnnxModel::ready`]): for a process that may never run them, such as a daemon with no
/// camera. The first run then pays the parse (ONNX Runtime: about a second for all the
/// shipped models), which is why the default is to parse at load.
pub fn load_on_first_use() {
    ON_FIRST_USE.store(true, Ordering::Relaxed);
}

/// One verified model, ready to run.
pub struct OnnxModel {
    file: String,
    sha256: String,
    /// Where its bytes are, and for which engine, until they are parsed.
    path: PathBuf,
    backend: Backend,
    shared: Arc<Shared>,
}

/// A model's engine, parsed once, shared by every load of the same file (same SHA-256)
/// for the same backend in this process: the anonymizer's proposer and the pre-labeller
/// both load NanoDet, and two ONNX Runtime sessions of it held its weights and arena
/// twice (issue 19). Runs on one engine take turns, as they do within one load.
struct Shared {
    engine: OnceLock<Engine>,
    parsing: Mutex<()>,
}

type SharedKey = (PathBuf, Backend, String);

/// The engines alive now, by file, backend and SHA-256; an entry goes with its last model.
static ENGINES: Mutex<Vec<(SharedKey, Weak<Shared>)>> = Mutex::new(Vec::new());

fn shared(key: SharedKey) -> Arc<Shared> {
    let mut engines = ENGINES.lock().unwrap_or_else(|p| p.into_inner());
    engines.retain(|(_, weak)| weak.strong_count() > 0);
    if let Some(alive) = engines.iter().find(|(k, _)| *k == key).and_then(|(_, weak)| weak.upgrade()) {
        return alive;
    }
    let fresh = Arc::new(Shared { engine: OnceLock::new(), parsing: Mutex::new(()) });
    engines.push((key, Arc::downgrade(&fresh)));
    fresh
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel").field("file", &self.file).field("sha256", &self.sha256).finish()
    }
}

impl OnnxModel {
    /// Loads `dir/file` after checking it against the manifest, for `backend`.
    pub fn load(dir: &Path, file: &str, backend: &Backend) -> Result<Self, OnnxError> {
        let path = dir.join(file);
        let expected = expected_sha256(file).ok_or_else(|| OnnxError::Unknown { file: file.to_owned() })?;
        let missing = |source| OnnxError::Missing { path: path.clone(), source };
        if ON_FIRST_USE.load(Ordering::Relaxed) {
            // Hashed as it streams by: reading the whole file would leave the allocator
            // holding its size once freed, which is what deferring the parse saves.
            let actual = sha256_of(&path).map_err(missing)?;
            if actual != expected {
                return Err(OnnxError::Altered { path, expected: expected.to_owned(), actual });
            }
            return Ok(Self::unparsed(file, actual, path, backend));
        }
        let bytes = std::fs::read(&path).map_err(missing)?;
        let actual = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
        if actual != expected {
            return Err(OnnxError::Altered { path, expected: expected.to_owned(), actual });
        }
        Self::parsed(file, actual, path, &bytes, backend)
    }

    /// Loads a model that is not shipped, from `path`. Its SHA-256 is recorded for
    /// provenance and, when `sha256` is given, must match it.
    pub fn load_path(path: &Path, sha256: Option<&str>, backend: &Backend) -> Result<Self, OnnxError> {
        let file = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let bytes = std::fs::read(path).map_err(|source| OnnxError::Unreadable { path: path.to_owned(), source })?;
        let actual = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
        if let Some(expected) = sha256
            && !expected.eq_ignore_ascii_case(&actual)
        {
            return Err(OnnxError::Mismatch { path: path.to_owned(), expected: expected.to_owned(), actual });
        }
        Self::parsed(&file, actual, path.to_owned(), &bytes, backend)
    }

    /// A verified model at `path`, parsed at its first run.
    fn unparsed(file: &str, sha256: String, path: PathBuf, backend: &Backend) -> Self {
        let shared = shared((path.clone(), backend.clone(), sha256.clone()));
        OnnxModel { file: file.to_owned(), sha256, path, backend: backend.clone(), shared }
    }

    /// A model of verified `bytes` (from `path`), parsed now unless another load of the
    /// same file already parsed it.
    fn parsed(file: &str, sha256: String, path: PathBuf, bytes: &[u8], backend: &Backend) -> Result<Self, OnnxError> {
        let model = Self::unparsed(file, sha256, path, backend);
        {
            let _one_at_a_time = model.shared.parsing.lock().unwrap_or_else(|p| p.into_inner());
            if model.shared.engine.get().is_none() {
                let _ = model.shared.engine.set(model.parse(bytes)?);
            }
        }
        Ok(model)
    }

    /// Parses verified bytes for its backend.
    fn parse(&self, bytes: &[u8]) -> Result<Engine, OnnxError> {
        Ok(match &self.backend {
            Backend::Tract => {
                let proto = tract_onnx::onnx().model_for_read(&mut &bytes[..]).map_err(|e| OnnxError::Tract {
                    file: self.file.clone(),
                    message: format!("does not parse: {e}"),
                })?;
                Engine::Tract { proto: Box::new(proto), plans: Mutex::new(HashMap::new()) }
            }
            Backend::Ort(library) => Engine::Ort(crate::ort_backend::OrtModel::load(library, &self.file, bytes)?),
        })
    }

    /// The parsed model: at once when it was parsed at load, else read again, checked
    /// against the SHA-256 it had at load (the file may have changed since), and parsed.
    fn engine(&self) -> Result<&Engine, OnnxError> {
        if let Some(engine) = self.shared.engine.get() {
            return Ok(engine);
        }
        let _one_at_a_time = self.shared.parsing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(engine) = self.shared.engine.get() {
            return Ok(engine);
        }
        let path = &self.path;
        let bytes = std::fs::read(path).map_err(|source| OnnxError::Missing { path: path.clone(), source })?;
        let actual = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
        if actual != self.sha256 {
            return Err(OnnxError::Altered { path: path.clone(), expected: self.sha256.clone(), actual });
        }
        let _ = self.shared.engine.set(self.parse(&bytes)?);
        Ok(self.shared.engine.get().expect("just set"))
    }

    /// Parses it now if it waits for its first run: to check that it parses, or to pay the
    /// parse before the first frame rather than on it.
    pub fn ready(&self) -> Result<(), OnnxError> {
        self.engine().map(|_| ())
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Runs the model on one NCHW float input of `width`×`height`.
    pub fn run(&self, width: u32, height: u32, chw: Vec<f32>) -> Result<Outputs, OnnxError> {
        let proto = match self.engine()? {
            Engine::Ort(model) => return model.run(width, height, chw),
            Engine::Tract { proto, plans } => (proto, plans),
        };
        let plan = self.plan(proto.0, proto.1, width, height)?;
        let input = tract_ndarray::Array4::from_shape_vec((1, 3, height as usize, width as usize), chw)
            .map_err(|e| self.error(e))?;
        let outputs = plan.run(tvec!(Tensor::from(input).into())).map_err(|e| self.error(e))?;
        outputs
            .iter()
            .map(|o| o.to_plain_array_view::<f32>().map(|v| v.to_owned()).map_err(|e| self.error(e)))
            .collect()
    }

    fn plan(
        &self,
        proto: &InferenceModel,
        plans: &Mutex<HashMap<(u32, u32), Arc<Plan>>>,
        width: u32,
        height: u32,
    ) -> Result<Arc<Plan>, OnnxError> {
        let mut plans = plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(plan) = plans.get(&(width, height)) {
            return Ok(plan.clone());
        }
        let fact = f32::fact([1, 3, height as usize, width as usize]);
        let plan = proto
            .clone()
            .with_input_fact(0, fact.into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| self.error(e))?;
        plans.insert((width, height), plan.clone());
        Ok(plan)
    }

    fn error(&self, e: impl std::fmt::Display) -> OnnxError {
        OnnxError::Tract { file: self.file.clone(), message: e.to_string() }
    }
}

/// The SHA-256 of the file at `path`, in hex, read in pieces.
fn sha256_of(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        match file.read(&mut buffer)? {
            0 => return Ok(hex::encode(digest.finish())),
            n => digest.update(&buffer[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
    }

    #[test]
    fn loads_of_one_file_share_one_engine_while_any_lives_and_a_changed_file_gets_its_own() {
        let dir = std::env::temp_dir().join(format!("obscura-shared-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = "plate_det.onnx";
        std::fs::copy(models().join(file), dir.join(file)).unwrap();
        let first = OnnxModel::load(&dir, file, &Backend::Tract).unwrap();
        let second = OnnxModel::load(&dir, file, &Backend::Tract).unwrap();
        assert!(Arc::ptr_eq(&first.shared, &second.shared), "the same file parsed twice");
        first.ready().unwrap();
        assert!(second.shared.engine.get().is_some(), "the second load does not see the first's parse");
        // Another backend is another engine.
        let lib = PathBuf::from("/nonexistent/libonnxruntime.so");
        let other = OnnxModel::unparsed(file, first.sha256.clone(), first.path.clone(), &Backend::Ort(lib));
        assert!(!Arc::ptr_eq(&first.shared, &other.shared));
        // Once every load is gone, the engine goes too.
        let weak = Arc::downgrade(&first.shared);
        drop((first, second));
        assert!(weak.upgrade().is_none(), "an engine outlived its models");
        // A file changed on disk (another SHA-256) is never served the old engine.
        let kept = OnnxModel::load_path(&dir.join(file), None, &Backend::Tract).unwrap();
        std::fs::write(dir.join(file), std::fs::read(models().join("centerface.onnx")).unwrap()).unwrap();
        let changed = OnnxModel::load_path(&dir.join(file), None, &Backend::Tract).unwrap();
        assert_ne!(kept.sha256(), changed.sha256());
        assert!(!Arc::ptr_eq(&kept.shared, &changed.shared));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_manifest_lists_every_shipped_model() {
        for file in ["centerface.onnx", "plate_det.onnx", "nanodet_g416_coco.onnx"] {
            assert_eq!(expected_sha256(file).map(str::len), Some(64), "{file}");
        }
    }

    #[test]
    fn a_missing_model_is_an_error_that_names_it() {
        let err =
            OnnxModel::load(Path::new("/nonexistent"), "centerface.onnx", &Backend::Tract).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/centerface.onnx: cannot read it"), "{err}");
    }

    #[test]
    fn on_first_use_a_model_is_checked_at_load_and_again_when_parsed() {
        load_on_first_use();
        let dir = std::env::temp_dir().join(format!("obscura-first-use-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let original = std::fs::read(models().join("plate_det.onnx")).unwrap();
        std::fs::write(dir.join("plate_det.onnx"), &original).unwrap();
        let model = OnnxModel::load(&dir, "plate_det.onnx", &Backend::Tract).unwrap();
        assert!(model.shared.engine.get().is_none(), "parsed at load");

        // Changed between load and first run: refused then, and not parsed.
        let mut altered = original.clone();
        let last = altered.len() - 100;
        altered[last] ^= 0x01;
        std::fs::write(dir.join("plate_det.onnx"), &altered).unwrap();
        let err = model.run(64, 64, vec![0.0; 3 * 64 * 64]).unwrap_err().to_string();
        assert!(err.contains("altered or corrupt"), "{err}");
        assert!(model.shared.engine.get().is_none());

        std::fs::write(dir.join("plate_det.onnx"), &original).unwrap();
        assert!(!model.run(64, 64, vec![0.0; 3 * 64 * 64]).unwrap().is_empty());
        assert!(model.shared.engine.get().is_some());

        // A file altered before load is refused at load, as always.
        std::fs::write(dir.join("plate_det.onnx"), &altered).unwrap();
        let err = OnnxModel::load(&dir, "plate_det.onnx", &Backend::Tract).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("altered or corrupt"), "{err}");
    }

    #[test]
    fn an_altered_model_is_refused() {
        let dir = std::env::temp_dir().join(format!("obscura-altered-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = std::fs::read(models().join("plate_det.onnx")).unwrap();
        let last = bytes.len() - 100;
        bytes[last] ^= 0x01;
        std::fs::write(dir.join("plate_det.onnx"), &bytes).unwrap();
        let err = OnnxModel::load(&dir, "plate_det.onnx", &Backend::Tract).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("altered or corrupt"), "{err}");
    }
}
