//! ONNX Runtime through the `ort` crate, loading `libonnxruntime.so` at run time
//! (`load-dynamic`), so the binary builds and runs without it and uses it when present.
//! The library comes from the `onnxruntime` wheel on PyPI (x86-64 and aarch64);
//! `scripts/deps` puts it in `/usr/local/lib/obscura/`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::value::Tensor;
use tract_onnx::prelude::tract_ndarray;

use crate::error::OnnxError;

/// Where the library is looked for after `ORT_DYLIB_PATH`.
const SEARCH: [&str; 2] = ["/usr/local/lib/obscura", "/usr/lib/obscura"];

/// The `libonnxruntime.so*` to load, if any.
pub fn find_library() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    SEARCH.iter().find_map(|dir| {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
            .collect();
        found.sort();
        found.pop()
    })
}

/// One process-wide ONNX Runtime environment; sessions borrow it.
static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

fn environment(library: &Path) -> Result<&'static ort::environment::Environment, String> {
    ENVIRONMENT
        .get_or_init(|| {
            ort::init_from(library)
                .map_err(|e| format!("cannot load {}: {e}", library.display()))?
                .with_name("obscura")
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A session per model. ONNX Runtime handles any input size; one thread per run, since
/// the anonymizer runs its detectors side by side.
pub(crate) struct OrtModel {
    file: String,
    session: Mutex<Session>,
}

impl OrtModel {
    pub(crate) fn load(library: &Path, file: &str, bytes: &[u8]) -> Result<Self, OnnxError> {
        let error = |message: String| OnnxError::Tract { file: file.to_owned(), message };
        let env = environment(library).map_err(error)?;
        let cannot = |e: &dyn std::fmt::Display| error(format!("ONNX Runtime cannot load it: {e}"));
        let mut builder =
            Session::builder(env).map_err(|e| cannot(&e))?.with_intra_threads(1).map_err(|e| cannot(&e))?;
        let session = builder.commit_from_memory(bytes).map_err(|e| cannot(&e))?;
        Ok(OrtModel { file: file.to_owned(), session: Mutex::new(session) })
    }

    /// The outputs in graph order, as tract's plain arrays, so that callers see one type
    /// whichever engine ran.
    pub(crate) fn run(
        &self,
        width: u32,
        height: u32,
        chw: Vec<f32>,
    ) -> Result<Vec<tract_ndarray::ArrayD<f32>>, OnnxError> {
        let error = |e: ort::Error| OnnxError::Tract { file: self.file.clone(), message: e.to_string() };
        let input = Tensor::from_array(([1usize, 3, height as usize, width as usize], chw)).map_err(error)?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(ort::inputs![input]).map_err(error)?;
        outputs
            .iter()
            .map(|(_, value)| {
                let (shape, data) = value.try_extract_tensor::<f32>().map_err(error)?;
                let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                tract_ndarray::ArrayD::from_shape_vec(tract_ndarray::IxDyn(&dims), data.to_vec())
                    .map_err(|e| OnnxError::Tract { file: self.file.clone(), message: e.to_string() })
            })
            .collect()
    }
}
