"""Command line of the pack: ``python -m diffportrait3d <command> ...`` (``--help`` lists the commands)."""

from __future__ import annotations

import argparse
import logging
import sys


def _add_convert(commands) -> None:
    parser = commands.add_parser(
        "convert",
        help="convert the official model_state-540000-001.th (or DiffPortrait360's two checkpoints) into "
        "per-component safetensors files",
        description="Split an official checkpoint into safetensors files for ComfyUI (UNet, appearance net, pose "
        "ControlNet, cross-view modules, VAE and text encoder when present). The model is recognised by its keys: "
        "DiffPortrait3D's model_state-540000-001.th -> diffportrait3d_*; DiffPortrait360's model_state-340000.th "
        "-> diffportrait360_*, its back_head-230000.th -> diffportrait360_backhead_* (UNet, appearance net, pose "
        "ControlNet).",
    )
    parser.add_argument("src", help="official checkpoint (.th/.pt/.ckpt, loaded with weights_only=True) or .safetensors")
    parser.add_argument("--out", required=True, help="output folder, e.g. ComfyUI/models/diffportrait3d")
    parser.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16", help="dtype of stored weights")
    parser.add_argument("--config", help="architecture JSON (default: the official yaml's of the recognised model)")
    parser.add_argument(
        "--only", nargs="+", metavar="COMPONENT", help="write only these components (default: every one present)"
    )
    parser.set_defaults(run=_run_convert)


def _run_convert(options) -> int:
    from ..kernels.checkpoint.convert import ConversionError, convert_checkpoint

    try:
        report = convert_checkpoint(
            options.src,
            options.out,
            dtype=options.dtype,
            config_path=options.config,
            components=tuple(options.only) if options.only else None,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def _add_poses(commands) -> None:
    from ..kernels.poses.camera_path_names import INTERPOLATIONS, OFFICIAL_ORBIT_A, OFFICIAL_ORBIT_B, PRESETS

    parser = commands.add_parser(
        "poses",
        help="write pose-condition images (template head) and the camera JSON; no weights needed",
        description="Render the template head at every camera of a path: view_NN.png, mask_NN.png, grid.png and "
        "cameras.json (25-number EG3D labels) in --out. With --benchmark, time the renderer instead.",
    )
    parser.add_argument("--preset", choices=PRESETS, default="official16", help="camera path preset (default official16)")
    parser.add_argument("--views", type=int, default=16, help="number of views (default 16; sphere32 has 32, sphere32_back 1)")
    parser.add_argument("--a", type=float, default=OFFICIAL_ORBIT_A, help="official16 horizontal amplitude (radians)")
    parser.add_argument("--b", type=float, default=OFFICIAL_ORBIT_B, help="official16 vertical amplitude (radians)")
    parser.add_argument("--yaw-min", type=float, default=-45.0, help="yaw_sweep first yaw (degrees)")
    parser.add_argument("--yaw-max", type=float, default=45.0, help="yaw_sweep last yaw (degrees)")
    parser.add_argument("--pitch", type=float, default=0.0, help="yaw_sweep/turntable360 pitch (degrees, - = camera above)")
    parser.add_argument("--keyframes", default="", help="keyframes preset: 'yaw,pitch,roll; yaw,pitch,roll; ...' (degrees)")
    parser.add_argument("--interpolation", choices=INTERPOLATIONS, default="per_view",
                        help="how keyframes are interpolated (default per_view)")
    parser.add_argument("--pivot", default="panohead", help="panohead, eg3d_ffhq or 'x,y,z'")
    parser.add_argument("--size", type=int, default=512, help="image size in pixels, multiple of 8 (default 512)")
    parser.add_argument("--antialias", type=int, default=1, help="supersampling factor (default 1 = off)")
    parser.add_argument("--skin", default="#dbad91", help="template head skin colour, #rrggbb")
    parser.add_argument("--hair", default="#33241a", help="template head hair colour, #rrggbb")
    parser.add_argument("--background", default="#ffffff", help="background colour, #rrggbb")
    parser.add_argument("--out", help="output folder (required unless --benchmark)")
    parser.add_argument("--benchmark", action="store_true", help="time the template head renderer (single thread) and exit")
    parser.add_argument("--sheet", help="write a contact sheet of all presets (PNG) to this path and exit")
    parser.set_defaults(run=_run_poses)


def _run_poses(options) -> int:
    import json
    from pathlib import Path

    from ..kernels.image_grid import image_grid
    from ..kernels.poses.camera import PIVOTS
    from ..kernels.poses.camera_paths import camera_path
    from ..kernels.poses.head_template import HeadLook, parse_hex_colour, render_template_head
    from .png_writer import write_png

    try:
        if options.size % 8 or options.size < 64:
            raise ValueError(f"--size {options.size} must be a multiple of 8 and at least 64")
        if options.pivot in PIVOTS:
            pivot = PIVOTS[options.pivot]
        else:
            pivot = tuple(float(v) for v in options.pivot.split(","))
            if len(pivot) != 3:
                raise ValueError("--pivot must be panohead, eg3d_ffhq or three numbers 'x,y,z'")
        cameras = camera_path(
            options.preset, options.views, options.a, options.b, options.yaw_min, options.yaw_max, options.pitch,
            options.keyframes, options.interpolation, pivot=pivot,
        )
        look = HeadLook(skin=parse_hex_colour(options.skin, "--skin"), hair=parse_hex_colour(options.hair, "--hair"))
        background = parse_hex_colour(options.background, "--background")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if options.benchmark:
        return _benchmark(cameras, options.size, look, background, options.antialias)
    if options.sheet:
        write_png(options.sheet, _preset_sheet(look, background, pivot))
        print(f"wrote {options.sheet}")
        return 0
    if not options.out:
        print("error: --out DIR is required (or use --benchmark)", file=sys.stderr)
        return 2
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    images, masks = render_template_head(cameras, options.size, options.size, look, background, options.antialias)
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        write_png(out / f"view_{index:02d}.png", image)
        write_png(out / f"mask_{index:02d}.png", mask)
    columns = 8 if len(cameras) >= 8 else len(cameras)
    write_png(out / "grid.png", image_grid(images, columns)[0])
    (out / "cameras.json").write_text(cameras.to_json(), encoding="utf-8")
    angles = json.loads(cameras.to_json())["views"]
    print(f"wrote {len(cameras)} condition images ({options.size}x{options.size}), masks, grid.png and cameras.json to {out}")
    for index, view in enumerate(angles):
        print(f"  view_{index:02d}.png  yaw {view['yaw_deg']:+7.2f}  pitch {view['pitch_deg']:+7.2f}  roll {view['roll_deg']:+6.2f} deg")
    return 0


def _preset_sheet(look, background, pivot, tile: int = 160):
    """Rows: official16 (2 rows of 8), yaw_sweep -60..60, turntable360 (8 views), keyframes with pitch and roll,
    sphere32 (4 rows of 8: DiffPortrait360's windows; view 18, the back-of-head camera, is row 3 column 3)."""
    import torch

    from ..kernels.image_grid import image_grid
    from ..kernels.poses.camera_paths import camera_path
    from ..kernels.poses.head_template import render_template_head

    rows = [
        camera_path("official16", pivot=pivot),
        camera_path("yaw_sweep", views=8, yaw_min_deg=-60, yaw_max_deg=60, pivot=pivot),
        camera_path("turntable360", views=8, pivot=pivot),
        camera_path("keyframes", keyframes="0,-25; 0,25; -30,-15; 30,-15; 0,0,-20; 0,0,20; -45,10; 45,10", pivot=pivot),
        camera_path("sphere32", pivot=pivot),
    ]
    images = torch.cat([render_template_head(cameras, tile, tile, look, background, 2)[0] for cameras in rows])
    return image_grid(images, 8, gap=6)[0]


def _benchmark(cameras, size: int, look, background, antialias: int) -> int:
    import platform
    import time

    import torch

    from ..kernels.poses.head_template import render_template_head, template_head_mesh
    from ..kernels.poses.rasterizer import project_points, rasterize

    torch.set_num_threads(1)
    mesh = template_head_mesh(look)
    render_template_head(cameras, size, size, look, background, antialias)  # warm-up
    per_view = []
    for _ in range(3):
        start = time.perf_counter()
        render_template_head(cameras, size, size, look, background, antialias)
        per_view.append((time.perf_counter() - start) / len(cameras))
    raster = []
    for view in range(len(cameras)):
        screen = project_points(mesh.vertices, cameras.cam2world[view], cameras.intrinsics[view], size, size)
        start = time.perf_counter()
        rasterize(screen, mesh.faces, size, size, cull="back")
        raster.append(time.perf_counter() - start)
    print(f"template head: {mesh.vertices.shape[0]} vertices, {mesh.faces.shape[0]} triangles; "
          f"{len(cameras)} views at {size}x{size}, antialias {antialias}, 1 thread, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(f"  full render (raster + shading): {min(per_view):.4f} s/view best, {sorted(per_view)[1]:.4f} s/view median of 3")
    print(f"  rasterise only: {sum(raster) / len(raster):.4f} s/view mean")
    return 0


def _add_bench(commands) -> None:
    parser = commands.add_parser(
        "bench",
        help="time guided sampling (random weights, no files) through ComfyUI; per-step time, breakdown, memory",
        description="Build the tiny or the full-size DiffPortrait3D networks with random weights, run guided DDIM "
        "steps for V views through the pack's ComfyUI path and report seconds per step (median), the time of "
        "each network, the overhead over the networks run alone, and peak memory (RSS; VRAM on a GPU). "
        "Needs a ComfyUI checkout ($COMFYUI_PATH, ../.. or ~/comfy/ComfyUI).",
    )
    parser.add_argument("--model", choices=["tiny", "full"], default="tiny", help="architecture (default tiny)")
    parser.add_argument("--family", choices=["dp3d", "dp360"], default="dp3d",
                        help="dp3d: DiffPortrait3D (27 cross-view modules, one reference); dp360: DiffPortrait360 (20 "
                        "modules, front and back references; e.g. --views 32 for the full-head run in 4 windows of 8)")
    parser.add_argument("--views", type=int, default=8, help="number of views (default 8)")
    parser.add_argument("--latent", type=int, default=16, help="latent height and width (default 16 = 128 px)")
    parser.add_argument("--steps", type=int, default=3, help="timed guided steps (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them (default 1)")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="storage dtype of the weights; ComfyUI picks the compute dtype (default fp32)")
    parser.add_argument("--cpu-matmul", choices=["onednn", "pytorch"], default="onednn",
                        help="float32 linear layers and small convolutions on a CPU: oneDNN (the pack's default) or "
                        "PyTorch's own (MKL); see docs/performance.md")
    parser.add_argument("--cpu-compute", choices=["float32", "bf16"], default="float32",
                        help="compute dtype on a CPU: float32 (ComfyUI's choice) or the pack's opt-in bf16 "
                        "($DIFFPORTRAIT3D_CPU_COMPUTE=bf16 in ComfyUI; needs --dtype bf16)")
    parser.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale (default 3.0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and noise (default 0)")
    parser.add_argument("--alone-repeats", type=int, default=2, help="repeats of each network run alone (best kept)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, i.e. $OMP_NUM_THREADS)")
    parser.add_argument(
        "--attention", choices=["comfy-default", "pytorch"], default="comfy-default",
        help="ComfyUI's attention: its default for the device (sub-quadratic on a CPU), or PyTorch's SDPA "
        "(ComfyUI's --use-pytorch-cross-attention)",
    )
    parser.add_argument(
        "--official", metavar="FILE",
        help="compare with the official code's timings in FILE: measured on this machine by tests/bench_official.py "
        "--out FILE, or another machine's (shared/reference/timings_full_cpu.json); without it nothing is compared",
    )
    parser.add_argument(
        "--flops", action="store_true",
        help="also count the work of a step (FLOP, one more untimed replay), the rate achieved and the floor the "
        "device's best product rate puts on a step",
    )
    parser.add_argument(
        "--heap", action="store_true",
        help="also the peak of the C heap's live bytes (host memory, glibc) in one more replay: what the tensors "
        "needed, without allocator slack; with --cpu-matmul pytorch --dtype bf16 --cpu-compute bf16 it estimates an "
        "fp16 GPU's VRAM",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    parser.set_defaults(run=_run_bench)


def _run_bench(options) -> int:
    import json

    import torch

    from .comfy_log import default_log_path, start_comfyui_logged
    from .comfy_session import ComfyUINotFound

    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        session = start_comfyui_logged(default_log_path(), pytorch_attention=options.attention == "pytorch")
    except ComfyUINotFound as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"ComfyUI {session.path} (its messages: {default_log_path()})", file=sys.stderr)
    from ..bench.benchmark import BenchConfig, format_report, run_benchmark

    config = BenchConfig(
        model=options.model, family=options.family, views=options.views, latent=options.latent, steps=options.steps,
        warmup=options.warmup,
        dtype=options.dtype, cpu_matmul=options.cpu_matmul, cpu_compute=options.cpu_compute, cfg=options.cfg,
        seed=options.seed, alone_repeats=options.alone_repeats, official=options.official, flops=options.flops,
        heap=options.heap,
    )
    try:
        config.check()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = run_benchmark(config)
    print(json.dumps(result, indent=1) if options.json else format_report(result))
    return 0


def _add_workflows(commands) -> None:
    parser = commands.add_parser(
        "workflows",
        help="write or check workflows/*.json (UI) and workflows/api/*.api.json from their descriptions",
        description="Build the shared workflows from cli/workflow_graphs.py with the node definitions of a "
        "ComfyUI found like the tests find it (COMFYUI_PATH, ../.., ~/comfy/ComfyUI) and this pack.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="write the files")
    action.add_argument("--check", action="store_true", help="exit 1 when a committed file is out of date")
    parser.add_argument("--dir", default=None, help="workflows folder (default: the pack's workflows/)")
    parser.set_defaults(run=_run_workflows)


def _run_workflows(options) -> int:
    from pathlib import Path

    from .comfy_host import PACK_ROOT
    from .comfy_log import default_log_path, start_comfyui_logged
    from .comfy_session import ComfyUINotFound, node_definitions
    from .workflow_graphs import WORKFLOWS, workflow_files

    try:
        start_comfyui_logged(default_log_path(), cpu=True)
    except ComfyUINotFound as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    folder = Path(options.dir) if options.dir else PACK_ROOT / "workflows"
    stale = []
    files = workflow_files(node_definitions())
    for name, text in files.items():
        path = folder / name
        if options.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
        elif not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(str(path))
    # API files directly in workflows/ (their old place) would show in ComfyUI's templates menu, where they fail.
    for misplaced in (folder / f"{name}.api.json" for name in WORKFLOWS):
        if misplaced.is_file():
            if options.write:
                misplaced.unlink()
                print(f"removed {misplaced} (API files live in {folder / 'api'})")
            else:
                stale.append(f"{misplaced} (misplaced: the templates menu would list it)")
    if stale:
        print("out of date (run: python -m diffportrait3d workflows --write):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    if options.check:
        print(f"workflows up to date: {len(files)} files in {folder} match the node definitions")
    return 0


def _add_run(commands) -> None:
    parser = commands.add_parser(
        "run",
        help="run a workflow on portraits: in this process with ComfyUI's executor, or on ComfyUI servers",
        description="Run a shared workflow (default: the official 8-view setup) for each portrait and write its "
        "outputs to --out/<portrait>_<hash>/: views/view_NN.png, grid.png, orbit.webp, cameras.json. Without "
        "--server, ComfyUI is imported in this process (COMFYUI_PATH, the pack's ../.., ~/comfy/ComfyUI); with "
        "--server URL (repeatable) the jobs go through ComfyUI's HTTP API, spread over the servers.",
    )
    parser.add_argument("--image", action="append", required=True, metavar="PATH",
                        help="a portrait, or a folder of portraits (repeatable)")
    parser.add_argument("--workflow", default="official_8_views",
                        help="API-format workflow JSON, or the name of a shared one in workflows/ (default official_8_views)")
    parser.add_argument("--views", type=int, help="number of views (the workflow's 'Views' node)")
    parser.add_argument("--steps", type=int, help="sampling steps (the workflow's 'Steps' node)")
    parser.add_argument("--seed", type=int, help="seed (the workflow's 'Seed' node)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--server", action="append", metavar="URL",
                        help="a running ComfyUI with this pack, e.g. http://127.0.0.1:8188 (repeatable)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds one job may take on a server before it is given to another (default 3600)")
    parser.add_argument("--retries", type=int, default=2,
                        help="with --server: how many more servers a job is tried on when its server dies or "
                        "times out (default 2); a prompt the server rejects is not retried")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo portraits whose outputs already exist in --out (by default they are skipped)")
    parser.add_argument("--models", action="append", default=[], metavar="DIR",
                        help="in-process: a models folder laid out like ComfyUI/models (searched first; repeatable)")
    parser.add_argument("--extra-model-paths-config", action="append", default=[], metavar="YAML",
                        help="in-process: ComfyUI extra_model_paths.yaml files (the host's own is always read)")
    parser.add_argument("--threads", type=int,
                        help="in-process on a CPU: torch threads (default: $OMP_NUM_THREADS, else the physical cores)")
    parser.set_defaults(run=_run_run)


def _workflow_path(name: str):
    """A workflow file given by path, or a shared workflow's API file (``workflows/api/<name>.api.json``) by name."""
    from pathlib import Path

    from .comfy_host import PACK_ROOT
    from .workflow_graphs import API_FOLDER, api_file

    path = Path(name)
    if path.is_file():
        return path
    shared = PACK_ROOT / "workflows" / api_file(name)
    if shared.is_file():
        return shared
    known = sorted(p.name[: -len(".api.json")] for p in (PACK_ROOT / "workflows" / API_FOLDER).glob("*.api.json"))
    raise FileNotFoundError(f"--workflow {name}: no such file, nor a shared workflow (shared: {', '.join(known)})")


def _run_run(options) -> int:
    import shutil
    from pathlib import Path

    from .workflow_jobs import JobError, job_name, load_prompt, portrait_paths

    settings = {"views": options.views, "seed": options.seed, "steps": options.steps}
    for key in ("views", "steps"):
        if settings[key] is not None and settings[key] < 1:
            print(f"error: --{key} must be at least 1", file=sys.stderr)
            return 2
    try:
        prompt = load_prompt(_workflow_path(options.workflow))
        portraits = portrait_paths(options.image)
    except (JobError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if options.retries < 0 or options.timeout <= 0:
        print("error: --retries must be 0 or more and --timeout above 0", file=sys.stderr)
        return 2
    out = Path(options.out)
    jobs = [(portrait, job_name(portrait)) for portrait in portraits]
    if not options.overwrite:
        from .server_client import outputs_complete

        todo = [(portrait, name) for portrait, name in jobs if not outputs_complete(out / name)]
        if len(todo) < len(jobs):
            print(f"skipped {len(jobs) - len(todo)} (outputs exist; --overwrite to redo)")
        jobs = todo
        if not jobs:
            return 0
    for _, name in jobs:  # partial outputs (or --overwrite) are redone from scratch
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    if options.server:
        return _run_on_servers(options, prompt, jobs, out, settings)
    return _run_in_process(options, prompt, jobs, out, settings)


def _run_on_servers(options, prompt, jobs, out, settings) -> int:
    from .server_client import ComfyServer, Job, ServerError, run_on_servers
    from .workflow_jobs import JobError, job_prompt, missing_models_message

    try:
        servers = [ComfyServer(url) for url in options.server]
        probe = job_prompt(prompt, "portrait.png", "check", **settings)
        for server in servers:
            missing = server.missing_models(probe)
            if missing:
                folders = {item.folder: [f"models/{item.folder}/ on {server.url}"] for item in missing}
                raise JobError(missing_models_message(missing, folders))
    except (JobError, ServerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    def report(job):
        if not job.error:
            print(f"{job.portrait} -> {out / job.name} ({len(job.written)} files, on {job.server})")

    done, down = run_on_servers(servers, [Job(p, name) for p, name in jobs], prompt, out, settings,
                                options.timeout, report, tries=options.retries + 1)
    failed = [job for job in done if job.error]
    print(f"{len(done) - len(failed)} of {len(done)} portraits done on {len(servers)} server(s)")
    for url, why in down.items():
        print(f"server down: {url}: {why}", file=sys.stderr)
    if down and len(down) == len(servers) and failed:
        print("error: every server went down; start them again and rerun the same command to resume "
              "(finished portraits are skipped)", file=sys.stderr)
    if failed:
        print(f"{len(failed)} failed:", file=sys.stderr)
        for job in failed:
            print(f"  FAILED {job.portrait}: {job.error}", file=sys.stderr)
    return 1 if failed else 0


def _run_in_process(options, prompt, jobs, out, settings) -> int:
    import shutil
    import tempfile
    from pathlib import Path

    from .comfy_log import start_comfyui_logged
    from .comfy_session import ComfyUINotFound
    from .cpu_threads import thread_count
    from .server_client import write_manifest
    from .workflow_jobs import JobError, job_prompt
    from .workflow_runner import add_models_root, check_models, copy_outputs, execute, validate

    try:
        threads, why = thread_count(options.threads)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log_path = out / "comfyui.log"
    with tempfile.TemporaryDirectory(prefix="diffportrait3d-run-") as scratch:
        inputs, outputs, previews = Path(scratch) / "input", Path(scratch) / "output", Path(scratch) / "temp"
        for folder in (inputs, outputs, previews):
            folder.mkdir()
        try:
            session = start_comfyui_logged(
                log_path, input_directory=inputs, output_directory=outputs, temp_directory=previews,
                extra_model_paths=tuple(Path(p) for p in options.extra_model_paths_config),
            )
            print(_device_line(threads, why) + f"; ComfyUI {session.path}, its log: {log_path}")
            for root in options.models:
                add_models_root(session.folder_paths, Path(root))
            ready = []
            for portrait, name in jobs:
                image = f"{name}{portrait.suffix.lower()}"
                shutil.copyfile(portrait, inputs / image)
                ready.append((portrait, name, job_prompt(prompt, image, name, **settings)))
            check_models(session.folder_paths, ready[0][2])
        except (ComfyUINotFound, JobError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except RuntimeError as error:  # the pack did not load into ComfyUI: the reason is in its log
            print(f"error: {error}; ComfyUI's log: {log_path}", file=sys.stderr)
            return 2
        executor, failed = None, 0
        for portrait, name, job in ready:
            try:
                targets = validate(session.execution, job)
                executor, produced = execute(session.execution, job, targets, executor)
                written = copy_outputs(session.folder_paths, job, produced, out / name)
                write_manifest(out / name, portrait, written, "this process")
            except JobError as error:
                print(f"FAILED {portrait}: {error}", file=sys.stderr)
                failed += 1
                continue
            print(f"{portrait} -> {out / name} ({len(written)} files)")
        print(f"{len(ready) - failed} of {len(ready)} portraits done in this process (ComfyUI at {session.path})")
        return 1 if failed else 0


def _add_demo(commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="run the official workflow end to end on a tiny random-weight model: checks the install, no download",
        description="Make a tiny DiffPortrait3D model with random weights (in a temporary folder), render a "
        "template-head portrait, and run the shipped official workflow on them in this process with ComfyUI's "
        "executor ($COMFYUI_PATH, ../.. or ~/comfy/ComfyUI). Writes views/, grid.png, orbit.webp, cameras.json and "
        "DEMO_README.txt (what to download for real views) to --out. The images are noise: the weights are random.",
    )
    parser.add_argument("--out", default="diffportrait3d-demo", help="output folder (default ./diffportrait3d-demo)")
    parser.add_argument("--views", type=int, default=8, help="number of views (default 8, the official batch)")
    parser.add_argument("--steps", type=int, default=8, help="DDIM steps (default 8; the official setup uses 50)")
    parser.add_argument("--size", type=int, default=128,
                        help="image size in pixels, a multiple of 64 (default 128; the official setup uses 512)")
    parser.set_defaults(run=_run_demo)


def _run_demo(options) -> int:
    import os
    from pathlib import Path

    from .demo import run_demo

    for key in ("views", "steps"):
        if getattr(options, key) < 1:
            print(f"error: --{key} must be at least 1", file=sys.stderr)
            return 2
    if options.size < 64 or options.size % 64:
        print(f"error: --size {options.size} must be a multiple of 64 (the tiny UNet halves the latent 3 times)",
              file=sys.stderr)
        return 2
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        # The tiny model's products are too small for threads to pay: on 2 cores one thread took 8 s, two 14 s
        # (and 60 s beside other busy processes).
        torch.set_num_threads(1)
    return run_demo(Path(options.out), options.views, options.steps, options.size)


def _add_doctor(commands) -> None:
    parser = commands.add_parser(
        "doctor",
        help="check the set-up: ComfyUI, the model files (header only), device, dtype, memory; each problem with its fix",
        description="Say where ComfyUI was looked for and found, which model files of the official workflow are "
        "present (component, architecture, dtype, the pack version that converted them) or missing or broken, the "
        "device and the dtype ComfyUI would use there, and an estimated memory need for 8 views at 512x512. Exit "
        "code 0 when everything needed is there, 1 otherwise. Loads no weights, downloads nothing.",
    )
    parser.add_argument("--models", action="append", default=[], metavar="DIR",
                        help="also a models folder laid out like ComfyUI/models, searched first (repeatable; as for run)")
    parser.add_argument("--extra-model-paths-config", action="append", default=[], metavar="YAML",
                        help="ComfyUI extra_model_paths.yaml files to apply (the host's own is always read)")
    parser.set_defaults(run=_run_doctor)


def _run_doctor(options) -> int:
    from pathlib import Path

    from .doctor import run_doctor

    configs = [Path(p) for p in options.extra_model_paths_config]
    for config in configs:
        if not config.is_file():
            print(f"error: --extra-model-paths-config {config}: no such file", file=sys.stderr)
            return 2
    code, text = run_doctor([Path(p) for p in options.models], configs)
    print(text)
    return code


def _device_line(threads: int, why: str) -> str:
    """Set torch's CPU threads; the device ComfyUI computes on, and the threads, in words."""
    import torch

    torch.set_num_threads(threads)
    import comfy.model_management

    device = comfy.model_management.get_torch_device()
    if device.type == "cuda":
        return f"device: {torch.cuda.get_device_name(device)} (CUDA)"
    if device.type == "cpu":
        return f"device: CPU, {threads} threads ({why}; --threads N to change)"
    return f"device: {device}"


COMMANDS = [_add_demo, _add_convert, _add_poses, _add_run, _add_workflows, _add_bench, _add_doctor]


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per entry of COMMANDS."""
    parser = argparse.ArgumentParser(prog="python -m diffportrait3d", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return options.run(options)

