use super::*;

/// A built-in profile's text with one exact snippet replaced (the snippet must be there).
fn edited(board: &str, from: &str, to: &str) -> String {
    let src = builtin_source(board).unwrap();
    assert!(src.contains(from), "{board}.toml has no `{from}`");
    src.replacen(from, to, 1)
}

fn error_of(origin: &str, text: &str) -> String {
    match BoardProfile::from_toml(origin, text) {
        Ok(p) => panic!("{origin} loaded but should not have: {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_builtin_profile_loads_and_is_named_after_its_file() {
    let names: Vec<_> = builtin_names().collect();
    assert_eq!(names, ["rpi4", "rpi5", "imx8mp", "rk3588", "qemu-arm64"]);
    for name in names {
        let p = BoardProfile::load(name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.name(), name);
        let est = p.estimated_capacity();
        assert!(p.encoder_input_format().is_some(), "{name}: encoder has a camera format");
        assert!(f64::from(p.capacity().max_forward_mbps) <= est.forward_mbps);
        assert!(p.capacity().max_participants >= 2);
        println!(
            "{name:>10}: {} x {} @ {} MHz, {:.1} us/packet -> {:.0} Mbit/s, {} participants (profile: {} Mbit/s, {})",
            p.cpu().cores,
            p.cpu().core,
            p.cpu().max_mhz,
            est.us_per_packet,
            est.forward_mbps,
            est.participants,
            p.capacity().max_forward_mbps,
            p.capacity().max_participants
        );
    }
}

#[test]
fn every_file_in_boards_dir_is_built_in() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".toml"))
        .collect();
    files.sort();
    let mut builtin: Vec<String> = builtin_names().map(|n| format!("{n}.toml")).collect();
    builtin.sort();
    assert_eq!(files, builtin, "add new profiles to BUILTIN in board/mod.rs");
    // And the file on disk is the one compiled in, loadable by path.
    for f in &files {
        let p = BoardProfile::load(dir.join(f).to_str().unwrap()).unwrap();
        assert_eq!(BoardProfile::load(p.name()).unwrap(), p);
    }
}

#[test]
fn boards_differ_where_the_hardware_does() {
    let pi4 = BoardProfile::load("rpi4").unwrap();
    let pi5 = BoardProfile::load("rpi5").unwrap();
    let qemu = BoardProfile::load("qemu-arm64").unwrap();
    // The Pi 4 lacks the crypto extensions, so it forwards less despite having a hardware encoder.
    assert!(!pi4.cpu().crypto_extensions && pi5.cpu().crypto_extensions);
    assert!(pi4.estimated_capacity().us_per_packet > pi5.estimated_capacity().us_per_packet * 2.0);
    assert!(pi4.encoder().hardware.is_some());
    // The Pi 5 has no H.264 encoder block.
    assert!(pi5.encoder().hardware.is_none());
    assert_eq!(pi5.encoder().video, VideoEncoder::Openh264);
    // The emulated board has vivid and snd-aloop, and no GPIO (simulated panel).
    assert!(qemu.gpio().is_none());
    assert!(qemu.audio().capture.contains("Loopback"));
    let fmt = qemu.encoder_input_format().unwrap();
    assert_eq!((fmt.fourcc, fmt.width, fmt.height), (PixelFormat::Yuyv, 640, 360));
    assert_eq!(&fmt.fourcc.fourcc_bytes(), b"YUYV");
}

#[test]
fn unknown_board_name_lists_the_known_ones() {
    let e = BoardProfile::load("rpi3").unwrap_err().to_string();
    assert!(e.contains("no board profile named `rpi3`"), "{e}");
    assert!(e.contains("rpi4, rpi5, imx8mp, rk3588, qemu-arm64"), "{e}");
}

#[test]
fn missing_file_is_a_read_error_with_the_path() {
    let e = BoardProfile::load("/nonexistent/board.toml").unwrap_err();
    assert!(matches!(e, BoardError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/board.toml"), "{e}");
}

#[test]
fn unknown_key_names_profile_line_and_key() {
    let text = edited("rpi4", "crypto_extensions = false\n", "crypto_extensions = false\nturbo = true\n");
    let e = error_of("rpi4", &text);
    assert!(e.starts_with("board profile `rpi4`:"), "{e}");
    assert!(e.contains("unknown field `turbo`"), "{e}");
    let line = text.lines().position(|l| l.starts_with("turbo")).unwrap() + 1;
    assert!(e.contains(&format!("line {line} (`turbo = true`)")), "{e}");
}

#[test]
fn unknown_key_in_a_nested_table_is_rejected() {
    let text =
        edited("rpi5", "button = { line = 17, active_low = true }", "button = { line = 17, pull = \"up\" }");
    let e = error_of("rpi5", &text);
    assert!(e.contains("unknown field `pull`"), "{e}");
    assert!(e.contains("button = { line = 17"), "{e}");
}

#[test]
fn unknown_pixel_format_is_rejected_with_the_choices() {
    let text = edited(
        "rpi4",
        "{ fourcc = \"YUYV\", width = 640, height = 360, fps = 30 }",
        "{ fourcc = \"H264\", width = 640, height = 360, fps = 30 }",
    );
    let e = error_of("rpi4", &text);
    assert!(e.contains("unknown variant `H264`"), "{e}");
    assert!(e.contains("YUYV") && e.contains("NV12") && e.contains("MJPG"), "{e}");
}

#[test]
fn missing_section_is_named() {
    let src = builtin_source("qemu-arm64").unwrap();
    let start = src.find("[audio]").unwrap();
    let end = src.find("[encoder]").unwrap();
    let text = format!("{}{}", &src[..start], &src[end..]);
    let e = error_of("qemu-arm64", &text);
    assert!(e.contains("missing field `audio`"), "{e}");
}

#[test]
fn conflicting_gpio_lines_name_both_keys() {
    let text = edited("rpi4", "led_live = { line = 23 }", "led_live = { line = 17 }");
    let e = error_of("rpi4", &text);
    assert!(e.contains("board profile `rpi4` is invalid"), "{e}");
    assert!(e.contains("gpio.led_live.line: line 17 is also gpio.button.line"), "{e}");
}

#[test]
fn impossible_camera_formats_are_named() {
    let text = edited(
        "qemu-arm64",
        "{ fourcc = \"YUYV\", width = 1280, height = 720, fps = 30 }",
        "{ fourcc = \"YUYV\", width = 1281, height = 720, fps = 0 },\n    { fourcc = \"NV12\", width = 8192, height = 4321, fps = 30 },\n    { fourcc = \"YUYV\", width = 640, height = 360, fps = 30 }",
    );
    let e = error_of("qemu-arm64", &text);
    assert!(e.contains("camera.formats[1]: 1281x720: H.264 needs even width and height"), "{e}");
    assert!(e.contains("camera.formats[1]: YUYV 1281x720@0: YUYV needs an even width"), "{e}");
    assert!(e.contains("camera.formats[1]: YUYV 1281x720@0: fps must be 1..=120"), "{e}");
    assert!(e.contains("camera.formats[2]: 8192x4321 is larger than H.264 level 5.1 allows"), "{e}");
    assert!(e.contains("camera.formats[2]: NV12 8192x4321@30: NV12 needs an even height"), "{e}");
    assert!(e.contains("camera.formats[3]: YUYV 640x360@30 repeats camera.formats[0]"), "{e}");
}

#[test]
fn encoder_size_must_come_from_the_camera() {
    let text = edited(
        "rpi5",
        "width = 1280\nheight = 720\nfps = 30\nbitrate",
        "width = 1920\nheight = 1080\nfps = 30\nbitrate",
    );
    let e = error_of("rpi5", &text);
    assert!(
        e.contains("encoder: 1920x1080 matches no camera format (camera.formats: MJPG 1280x720@30, YUYV 1280x720@10, YUYV 640x360@30)"),
        "{e}"
    );
    // 642x362 is a camera size (even) but not one the pipeline encodes.
    let text = edited(
        "qemu-arm64",
        "width = 640\nheight = 360\nfps = 30\nbitrate",
        "width = 642\nheight = 362\nfps = 30\nbitrate",
    )
    .replace(
        "{ fourcc = \"YUYV\", width = 640, height = 360, fps = 30 }",
        "{ fourcc = \"YUYV\", width = 642, height = 362, fps = 30 }",
    );
    let e = error_of("qemu-arm64", &text);
    assert!(e.contains("encoder: 642x362: the pipeline encodes sizes in multiples of 4"), "{e}");
    assert!(!e.contains("camera.formats"), "{e}");
    let text = edited("qemu-arm64", "fps = 30\nbitrate_kbps = 600", "fps = 60\nbitrate_kbps = 600");
    let e = error_of("qemu-arm64", &text);
    assert!(e.contains("encoder.fps: 60 fps but the camera gives 640x360 at 30 fps at most"), "{e}");
}

#[test]
fn hardware_encoder_choice_needs_the_hardware() {
    let text = edited("rpi5", "video = \"openh264\"", "video = \"v4l2-m2m\"");
    let e = error_of("rpi5", &text);
    assert!(e.contains("encoder.video: \"v4l2-m2m\" but the board has no [encoder.hardware]"), "{e}");
    // The Pi 4's block is reachable through V4L2, so the choice is possible there.
    let text = edited("rpi4", "video = \"openh264\"", "video = \"v4l2-m2m\"");
    let p = BoardProfile::from_toml("rpi4", &text).unwrap();
    assert_eq!(p.encoder().video, VideoEncoder::V4l2M2m);
    // RK3588's is only reachable through the vendor library.
    let text = edited("rk3588", "video = \"openh264\"", "video = \"v4l2-m2m\"");
    let e = error_of("rk3588", &text);
    assert!(e.contains("encoder.hardware.api is not \"v4l2-m2m\""), "{e}");
}

#[test]
fn audio_must_suit_the_pipeline() {
    let text = edited(
        "qemu-arm64",
        "sample_rate = 48000\nchannels = 1\nperiod_ms = 20",
        "sample_rate = 44100\nchannels = 6\nperiod_ms = 25",
    );
    let e = error_of("qemu-arm64", &text);
    assert!(e.contains("audio.sample_rate: 44100 Hz: the pipeline runs at 48000 Hz"), "{e}");
    assert!(e.contains("audio.channels: 6: the pipeline captures mono"), "{e}");
    assert!(e.contains("audio.period_ms: 25 ms"), "{e}");
}

#[test]
fn limits_beyond_the_estimate_are_rejected() {
    let text = edited("rpi4", "max_forward_mbps = 120", "max_forward_mbps = 500");
    let e = error_of("rpi4", &text);
    assert!(
        e.contains(
            "capacity.max_forward_mbps: 500 Mbit/s is more than [capacity.estimate] supports (134 Mbit/s"
        ),
        "{e}"
    );
    let text = edited("rpi4", "max_participants = 8", "max_participants = 30");
    let e = error_of("rpi4", &text);
    assert!(e.contains("capacity.max_participants: 30 is more than 120 Mbit/s supports: 9 people"), "{e}");
    let text = edited("rpi4", "forwarding_cores = 2.5", "forwarding_cores = 6.0");
    let e = error_of("rpi4", &text);
    assert!(e.contains("capacity.estimate.forwarding_cores: 6 is more than cpu.cores (4)"), "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = edited("rpi4", "led_live = { line = 23 }", "led_live = { line = 22 }")
        .replace("long_press_ms = 2000", "long_press_ms = 40")
        .replace("channels = 1", "channels = 0");
    let e = BoardProfile::from_toml("rpi4", &text).unwrap_err();
    let BoardError::Invalid { problems, .. } = &e else { panic!("{e}") };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["audio.channels", "gpio.long_press_ms", "gpio.led_live.line"], "{e}");
    // One problem per line in the message.
    assert_eq!(e.to_string().lines().count(), 4, "{e}");
}

#[test]
fn a_profile_round_trips_through_toml() {
    for name in builtin_names() {
        let p = BoardProfile::load(name).unwrap();
        let text = toml::to_string(&p).unwrap();
        assert_eq!(BoardProfile::from_toml(name, &text).unwrap(), p);
    }
}
