//! `obscura blur` and `obscura eval` as a user runs them, on real photos with the real
//! models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

fn obscura(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_obscura"))
        .args(args)
        .env("OBSCURA_MODELS", root().join("models"))
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn has_exif(jpeg: &[u8]) -> bool {
    jpeg.windows(6).any(|w| w == b"Exif\0\0")
}

#[test]
fn exif_is_stripped_unless_asked_to_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("face_face-recognition_obama.jpg");
    assert!(has_exif(&std::fs::read(&input).unwrap()), "the fixture carries EXIF");
    let out = dir.path().join("stripped.jpg");
    assert!(obscura(&["blur", s(&input), "-o", s(&out)]).status.success());
    assert!(!has_exif(&std::fs::read(&out).unwrap()));
    let kept = dir.path().join("kept.jpg");
    assert!(obscura(&["blur", s(&input), "-o", s(&kept), "--keep-metadata"]).status.success());
    assert!(has_exif(&std::fs::read(&kept).unwrap()));
}

#[test]
fn a_png_stays_lossless_outside_the_masks_and_is_changed_inside() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("face_skimage_astronaut.png");
    let json = dir.path().join("detections.json");
    let run = obscura(&["blur", s(&input), "-o", &format!("{}/", dir.path().display()), "--json", s(&json)]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out = image::open(dir.path().join("face_skimage_astronaut.png")).unwrap().into_rgb8();
    let before = image::open(&input).unwrap().into_rgb8();
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let boxes: Vec<[f32; 4]> = report["files"][0]["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_value(d["bbox"].clone()).unwrap())
        .collect();
    // The astronaut's face (ground truth 175,62 – 275,175) is among them.
    let face = boxes.iter().find(|b| (b[0] - 175.0).abs() < 15.0 && (b[3] - 175.0).abs() < 15.0);
    assert!(face.is_some(), "the face was not found: {boxes:?}");
    // Every mask is its box grown by the default 1.3 about its centre (a pixel of slack).
    let masked = |x: u32, y: u32| {
        boxes.iter().any(|b| {
            let (cx, cy, hw, hh) =
                ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, (b[2] - b[0]) * 0.65 + 1.0, (b[3] - b[1]) * 0.65 + 1.0);
            (x as f32 + 0.5 - cx).abs() <= hw && (y as f32 + 0.5 - cy).abs() <= hh
        })
    };
    let mut changed_inside = 0;
    for (x, y, px) in out.enumerate_pixels() {
        if masked(x, y) {
            changed_inside += usize::from(px != before.get_pixel(x, y));
        } else {
            assert_eq!(px, before.get_pixel(x, y), "pixel ({x},{y}) outside every mask changed");
        }
    }
    assert!(changed_inside > 8000, "only {changed_inside} pixels of the face changed");
}

/// The detections `obscura blur --json` wrote: (class, box).
fn detections(json: &Path) -> Vec<(String, [f32; 4])> {
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    report["files"][0]["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["class"].as_str().unwrap().to_owned(), serde_json::from_value(d["bbox"].clone()).unwrap()))
        .collect()
}

#[test]
fn plates_are_boxes_and_distant_cars_have_their_plate_area_covered() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("plate_fast-alpr_skoda-CZ.png");
    let (out, json) = (dir.path().join("out.png"), dir.path().join("detections.json"));
    let args = ["blur", s(&input), "-o", s(&out), "--mode", "solid", "--shape", "ellipse", "--json", s(&json)];
    let run = obscura(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("distant vehicle plate area(s)"), "{stderr}");
    let found = detections(&json);
    let out = image::open(&out).unwrap().into_rgb8();
    let black = |b: [f32; 4]| {
        let (x0, y0, x1, y1) = (b[0].ceil() as u32, b[1].ceil() as u32, b[2].floor() as u32, b[3].floor() as u32);
        (y0..y1).all(|y| (x0..x1).all(|x| out.get_pixel(x, y).0 == [0, 0, 0]))
    };
    // The plate (ground truth 306,189 – 388,211) is found, and the whole of it is filled,
    // corners too, although faces are ellipses here.
    assert!(found.iter().any(|(c, b)| c == "license_plate" && b[0] < 316.0 && b[2] > 378.0), "{found:?}");
    assert!(black([306.0, 189.0, 388.0, 211.0]), "the plate's corners are covered");
    // The cars parked far off at the left edge are too small for their plates to be
    // found: where their plates can be is covered instead.
    let areas: Vec<[f32; 4]> = found.iter().filter(|(c, _)| c == "plate_area").map(|(_, b)| *b).collect();
    assert!(!areas.is_empty() && areas.iter().all(|b| b[2] < 100.0 && b[2] - b[0] < 96.0), "{found:?}");
    assert!(areas.iter().all(|b| black(*b)), "every plate area is filled");
    // The near car carries the plate that was found, so it has no plate area.
    assert!(areas.iter().all(|b| b[0] > 0.0 || b[2] < 306.0));

    let off = dir.path().join("off.json");
    let run = obscura(&[&args[..8], &["--json", s(&off), "--plate-areas", "0"]].concat());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(detections(&off).iter().all(|(c, _)| c != "plate_area"));
}

#[test]
fn bad_inputs_get_clear_errors_and_the_rest_of_the_batch_completes() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.jpg");
    let mut bytes = std::fs::read(fixture("face_trackingjs_group3.jpg")).unwrap();
    bytes.truncate(600);
    std::fs::write(&corrupt, bytes).unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a picture").unwrap();
    let out = dir.path().join("out");
    let run = obscura(&[
        "blur",
        s(&corrupt),
        s(&text),
        s(&dir.path().join("missing.png")),
        s(&fixture("face_trackingjs_group3.jpg")),
        "-o",
        s(&out),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("corrupt.jpg: corrupt or truncated image data"), "{stderr}");
    assert!(stderr.contains("notes.txt: not an image Obscura reads"), "{stderr}");
    assert!(stderr.contains("missing.png: no such file or directory"), "{stderr}");
    assert!(stderr.contains("1 file(s) anonymized, 3 failed"), "{stderr}");
    assert!(out.join("face_trackingjs_group3.jpg").exists());
    assert!(!out.join("corrupt.jpg").exists(), "no half-written output");
}

#[test]
fn an_unwritable_output_directory_is_a_clear_error() {
    let run = obscura(&[
        "blur",
        s(&fixture("face_trackingjs_group3.jpg")),
        s(&fixture("face_skimage_astronaut.png")),
        "-o",
        "/proc/obscura-out",
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("cannot create the output directory /proc/obscura-out"), "{stderr}");
}

#[test]
fn a_corrupt_model_fails_closed_with_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let mut model = std::fs::read(root().join("models/centerface.onnx")).unwrap();
    model[1000] ^= 0xff;
    std::fs::write(models.join("centerface.onnx"), model).unwrap();
    std::fs::copy(root().join("models/plate_det.onnx"), models.join("plate_det.onnx")).unwrap();
    let out = dir.path().join("out.jpg");
    let run = obscura(&["blur", s(&fixture("face_trackingjs_group3.jpg")), "-o", s(&out), "--models", s(&models)]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("centerface.onnx: SHA-256 is"), "{stderr}");
    assert!(stderr.contains("altered or corrupt"), "{stderr}");
    assert!(!out.exists(), "nothing may be written when a model is bad");
}

#[test]
fn eval_reports_recall_and_collateral() {
    let dir = tempfile::tempdir().unwrap();
    let gt = dir.path().join("gt.json");
    std::fs::write(
        &gt,
        r#"{"images": {
            "face_trackingjs_group3.jpg": {"faces": [
                {"box": [457.9, 51.0, 548.1, 161.1], "hard": false},
                {"box": [49.1, 82.0, 138.3, 189.7], "hard": false},
                {"box": [230.0, 127.0, 322.1, 246.3], "hard": false}]},
            "plate_fast-alpr_skoda-CZ.png": {"plates": [{"box": [306, 189, 388, 211], "hard": false}]}
        }}"#,
    )
    .unwrap();
    let json = dir.path().join("figures.json");
    let run = obscura(&["eval", "--gt", s(&gt), s(&root().join("tests/fixtures")), "--json", s(&json)]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("non-hard faces   3/3 (100.0 %)"), "{stdout}");
    assert!(stdout.contains("non-hard plates  1/1 (100.0 %)"), "{stdout}");
    let figures: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert!(figures["total"]["collateral_percent"].as_f64().unwrap() < 3.0);

    // As video: each image held for three frames, people and vehicles looked at in turn
    // (25 people a second: one a frame, here), every frame scored.
    let fixtures = root().join("tests/fixtures");
    let run = obscura(&["eval", "--gt", s(&gt), s(&fixtures), "--video-frames", "3", "--person-looks", "25"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("non-hard faces   9/9 (100.0 %)"), "{stdout}");
    assert!(stdout.contains("non-hard plates  3/3 (100.0 %)"), "{stdout}");
}

/// The first `frames` frames of the bundled real clip, re-encoded by GStreamer.
fn short_clip(dir: &Path, frames: u32) -> PathBuf {
    let clip = root().join("samples/cap12-webcam.webm");
    let out = dir.join("short.webm");
    let status = Command::new("gst-launch-1.0")
        .args(["-q", "filesrc"])
        .arg(format!("location={}", clip.display()))
        .args(["!", "matroskademux", "!", "vp8dec", "!", "identity"])
        .arg(format!("eos-after={}", frames + 1))
        .args(["!", "vp8enc", "deadline=1", "!", "webmmux", "!", "filesink"])
        .arg(format!("location={}", out.display()))
        .status()
        .unwrap();
    assert!(status.success());
    out
}

/// Frame count and the last presentation time of a video.
fn frames_and_last_pts(path: &Path) -> (u64, std::time::Duration, (i32, i32)) {
    let mut reader = capture::video::VideoReader::open(path).unwrap();
    let (mut n, mut last, mut fps) = (0, std::time::Duration::ZERO, (0, 1));
    while let Some(frame) = reader.next_frame().unwrap() {
        n += 1;
        last = frame.pts;
        fps = frame.fps.unwrap_or(fps);
    }
    (n, last, fps)
}

#[test]
fn a_video_keeps_its_frame_rate_and_duration_and_its_face_is_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let input = short_clip(dir.path(), 20);
    let output = dir.path().join("out.webm");
    let json = dir.path().join("d.json");
    let run = obscura(&["blur", s(&input), "-o", s(&output), "--json", s(&json)]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(frames_and_last_pts(&output), frames_and_last_pts(&input));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(report["files"][0]["frames"], 20);
    let faces = report["files"][0]["detections"].as_array().unwrap().len();
    assert!(faces >= 18, "the webcam face was found in {faces} of 20 frames");
}

#[test]
fn bench_anonymize_reports_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let input = short_clip(dir.path(), 4);
    let run = obscura(&["bench", "anonymize", s(&input), "--frames", "3", "--tiles", "0", "--plate-tiles", "0"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    for stage in ["decode", "faces", "plates", "redact", "encode", "total", "end to end:", "(3 frames)"] {
        assert!(stdout.contains(stage), "no `{stage}` in\n{stdout}");
    }
}

/// The bundled real clip's first `frames` frames with a tone beside them, as speech
/// would be.
fn clip_with_audio(dir: &Path, frames: u32) -> PathBuf {
    let clip = root().join("samples/cap12-webcam.webm");
    let out = dir.join("talk.webm");
    let description = format!(
        "webmmux name=mux ! filesink location={out} \
         filesrc location={clip} ! matroskademux ! vp8dec ! identity eos-after={eos} ! vp8enc deadline=1 ! queue ! mux. \
         audiotestsrc num-buffers={buffers} samplesperbuffer=1920 ! audio/x-raw,rate=48000 ! opusenc ! queue ! mux.",
        out = out.display(),
        clip = clip.display(),
        eos = frames + 1,
        // 40 ms of audio per buffer, one per video frame at 25 fps.
        buffers = frames,
    );
    let status = Command::new("gst-launch-1.0").arg("-q").args(description.split_whitespace()).status().unwrap();
    assert!(status.success());
    out
}

#[test]
fn audio_is_dropped_unless_asked_to_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip_with_audio(dir.path(), 20);
    assert!(capture::video::has_audio(&input).unwrap(), "the test clip has audio");
    let silent = dir.path().join("silent.webm");
    let run = obscura(&["blur", s(&input), "-o", s(&silent)]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(!capture::video::has_audio(&silent).unwrap(), "audio is dropped by default");

    let kept = dir.path().join("kept.webm");
    let run = obscura(&["blur", s(&input), "-o", s(&kept), "--keep-audio"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(capture::video::has_audio(&kept).unwrap(), "--keep-audio keeps it");
    assert_eq!(frames_and_last_pts(&kept), frames_and_last_pts(&silent), "the video is the anonymized one, whole");

    // A video without audio: --keep-audio has nothing to keep, and does not wait for it.
    let mute = short_clip(dir.path(), 5);
    let out = dir.path().join("mute-out.webm");
    let run = obscura(&["blur", s(&mute), "-o", s(&out), "--keep-audio"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(!capture::video::has_audio(&out).unwrap());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".obscura-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn bench_prelabel_reports_each_engine() {
    let run = obscura(&["bench", "prelabel", s(&fixture("face_trackingjs_group3.jpg")), "--runs", "1"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("tract") && stdout.contains("ms per image"), "{stdout}");
}
