"""Camera paths and pose-condition images (the pose ControlNet's input) as ComfyUI nodes."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from comfy_api.latest import io, ui

from ..kernels.image_grid import image_grid
from ..kernels.input_files import file_in_folder
from ..kernels.poses.camera import EG3D_FOCAL, EG3D_RADIUS, PIVOTS, CameraSet, frontal_camera_like
from ..kernels.poses.camera_path_names import INTERPOLATIONS, OFFICIAL_ORBIT_A, OFFICIAL_ORBIT_B, PRESETS
from ..kernels.poses.camera_paths import camera_path, parse_keyframes
from ..kernels.poses.camera_validation import MAX_VIEWS, CameraError, check_camera_set
from ..kernels.poses.depth_mesh import depth_relief_mesh
from ..kernels.poses.driving_frames import (
    MAX_POSE_GAP_DEG,
    assign_frames,
    estimate_foreground,
    head_box,
    linear_sweep_angles,
    official_head_box,
    pose_distances,
    reframe,
)
from ..kernels.poses.head_template import (
    DEFAULT_EYE_HEIGHT,
    WORLD_UNITS_PER_CM,
    HeadLook,
    head_radius_cm,
    parse_hex_colour,
    render_template_head,
)
from ..kernels.poses.mesh_render import render_mesh_views
from ..kernels.poses.obj_mesh import fit_to_head_frame, load_obj

Cameras = io.Custom("DP3D_CAMERAS")
CATEGORY = "DiffPortrait3D/poses"
MAX_SIZE = 4096


def check_pixel_size(size: int) -> int:
    if size % 8 or size < 64:
        raise ValueError(f"size: {size} must be a multiple of 8 and at least 64 (the VAE works on 8x8 blocks); try 512")
    return size


# Measured with the template head on a CPU (float32): rasterising and shading hold about 150-190 bytes per
# rendered pixel (2048^2: 0.76 GB, 4096^2: 2.5 GB); each output view keeps an image and a mask (16 bytes per
# pixel), counted twice for the copies made downstream (previews, VAE input).
RENDER_BYTES_PER_PIXEL = 192
OUTPUT_BYTES_PER_PIXEL = 32


def check_render_memory(views: int, size: int, supersample: int = 1) -> None:
    """``ValueError`` naming size/antialias when a render would need more memory than is free, so an oversized
    request fails with a message instead of the server being killed for memory."""
    import psutil

    need = RENDER_BYTES_PER_PIXEL * (size * supersample) ** 2 + OUTPUT_BYTES_PER_PIXEL * views * size**2
    free = psutil.virtual_memory().available
    if need > free:
        inputs = "size, antialias" if supersample > 1 else "size"
        raise ValueError(
            f"{inputs}: {views} views of {size}x{size} pixels" + (f" with antialias {supersample}" if supersample > 1 else "")
            + f" need about {need / 2**30:.1f} GiB of memory and {free / 2**30:.1f} GiB is free; lower {inputs} or the number of views"
        )


def check_cameras(cameras) -> CameraSet:
    """Any camera-set-like value (``cam2world`` and ``intrinsics`` tensors) as this module's CameraSet, every
    view checked (``camera_validation.check_camera_set``); ``ValueError`` naming the input and the view."""
    try:
        cameras = CameraSet(torch.as_tensor(cameras.cam2world, dtype=torch.float64), torch.as_tensor(cameras.intrinsics, dtype=torch.float64))
    except (AttributeError, TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"cameras: connect a DiffPortrait3D Camera Path (or Cameras From JSON) node ({error})") from error
    try:
        return check_camera_set(cameras)
    except CameraError as error:
        raise ValueError(f"cameras: {error}") from error


def require_visible(masks: torch.Tensor, what: str, fix: str, every_view: bool = True) -> None:
    """``ValueError`` when a rendered condition is empty: any view (``every_view``) or all of them."""
    empty = [view for view, mask in enumerate(masks) if not bool(mask.any())]
    if empty and (every_view or len(empty) == len(masks)):
        raise ValueError(f"{what} is in the picture of no camera for views {empty} (0-based) of {len(masks)}; {fix}")


def input_file(name: str, input_name: str, example: str) -> Path:
    """The file ``name`` in ComfyUI's input folder; one ``ValueError`` for missing and outside alike, so the
    message never tells a client whether a path outside the folder exists."""
    import folder_paths

    folder = folder_paths.get_input_directory()
    path = file_in_folder(name, folder)
    if path is None:
        shown = name.strip()[:200]
        raise ValueError(
            f"{input_name}: '{shown}' must be a file in ComfyUI's input folder: {folder} (give its name relative to "
            f"that folder, e.g. '{example}'; paths that lead outside it are refused)"
        )
    return path


def read_input_text(path: Path, input_name: str, shown: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{input_name}: the file '{shown}' in the input folder cannot be read as UTF-8 text ({error})") from error


class CameraPath(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DCameraPath",
            display_name="DiffPortrait3D Camera Path",
            category=CATEGORY,
            description="Target cameras (EG3D/PanoHead conventions) for novel views: the official 16-view orbit, "
            "a yaw sweep, a 360 turntable, your own keyframes, DiffPortrait360's 32 inference cameras (sphere32: a full "
            "turn, 4 windows of 8) or its back camera alone (sphere32_back: view 18, for the back-of-head step).",
            inputs=[
                io.Combo.Input("preset", options=list(PRESETS), default="official16"),
                io.Int.Input("views", default=16, min=1, max=MAX_VIEWS, tooltip="number of views (keyframes/per_view: one per keyframe; sphere32: always 32; sphere32_back: 1)"),
                io.Float.Input("orbit_a", default=OFFICIAL_ORBIT_A, min=0.0, max=1.5, step=0.01, tooltip="official16: horizontal amplitude a (radians)"),
                io.Float.Input("orbit_b", default=OFFICIAL_ORBIT_B, min=0.0, max=1.5, step=0.01, tooltip="official16: vertical amplitude b (radians)"),
                io.Float.Input("yaw_min", default=-45.0, min=-180.0, max=180.0, step=1.0, tooltip="yaw_sweep: first yaw (degrees, + = face turns to image left)"),
                io.Float.Input("yaw_max", default=45.0, min=-180.0, max=180.0, step=1.0, tooltip="yaw_sweep: last yaw (degrees)"),
                io.Float.Input("pitch", default=0.0, min=-80.0, max=80.0, step=1.0, tooltip="yaw_sweep/turntable360: pitch (degrees, - = camera above)"),
                io.String.Input("keyframes", multiline=True, default="-30, 0\n0, 0\n30, 0", tooltip="keyframes: one 'yaw, pitch, roll' (degrees) per line"),
                io.Combo.Input("interpolation", options=list(INTERPOLATIONS), default="per_view", tooltip="keyframes: per_view = one view per line; linear/smooth = 'views' views through the keyframes"),
                io.Combo.Input("pivot", options=[*PIVOTS, "custom"], default="panohead", tooltip="point the cameras look at: PanoHead (0,0,0), EG3D FFHQ (0,0,0.2) or pivot_x/y/z"),
                io.Float.Input("pivot_x", default=0.0, min=-1.0, max=1.0, step=0.01),
                io.Float.Input("pivot_y", default=0.0, min=-1.0, max=1.0, step=0.01),
                io.Float.Input("pivot_z", default=0.0, min=-1.0, max=1.0, step=0.01),
                io.Float.Input("radius", default=EG3D_RADIUS, min=0.5, max=20.0, step=0.01),
                io.Float.Input("focal", default=EG3D_FOCAL, min=0.5, max=20.0, step=0.0001, tooltip="focal length / image size (EG3D: 4.2647)"),
            ],
            outputs=[Cameras.Output(display_name="cameras"), io.String.Output(display_name="camera_json")],
        )

    @classmethod
    def execute(cls, preset, views, orbit_a, orbit_b, yaw_min, yaw_max, pitch, keyframes, interpolation, pivot, pivot_x, pivot_y, pivot_z, radius, focal) -> io.NodeOutput:
        if pivot != "custom" and pivot not in PIVOTS:
            raise ValueError(f"pivot: must be one of {[*PIVOTS, 'custom']}, got '{pivot}'")
        point = (pivot_x, pivot_y, pivot_z) if pivot == "custom" else PIVOTS[pivot]
        try:
            cameras = camera_path(
                preset, views, orbit_a, orbit_b, yaw_min, yaw_max, pitch, keyframes, interpolation, radius=radius, pivot=point, focal=focal
            )
        except ValueError as error:
            raise ValueError(f"DiffPortrait3D Camera Path: {error}") from error
        return io.NodeOutput(cameras, cameras.to_json())


class CamerasFromJSON(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DCamerasFromJSON",
            display_name="DiffPortrait3D Cameras From JSON",
            category=CATEGORY,
            description="Cameras from JSON text: this pack's camera JSON, {'labels': [...]} (EG3D dataset.json too) or a list "
            "of 25-number EG3D labels. The name of a .json file in ComfyUI's input folder also works.",
            inputs=[io.String.Input("json_text", multiline=True, default="", tooltip="JSON text, or the name of a .json file in ComfyUI's input folder")],
            outputs=[Cameras.Output(display_name="cameras")],
        )

    @classmethod
    def execute(cls, json_text) -> io.NodeOutput:
        text = json_text.strip()
        source = "json_text"
        if not text:
            raise ValueError(
                "json_text: empty; paste camera JSON (e.g. the camera_json output of DiffPortrait3D Camera Path) "
                "or give the name of a .json file in ComfyUI's input folder"
            )
        if not text.startswith(("{", "[")):  # not JSON text: the name of a file
            source = f"json_text (file '{text[:200]}')"
            text = read_input_text(input_file(text, "json_text", "cameras.json"), "json_text", text[:200])
        try:
            return io.NodeOutput(CameraSet.from_json(text))
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error


class SaveCameraJSON(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DSaveCameraJSON",
            display_name="DiffPortrait3D Save Camera JSON",
            category=CATEGORY,
            description="Write the cameras (25-number EG3D labels plus yaw/pitch/roll) to a JSON file in ComfyUI's output folder.",
            inputs=[Cameras.Input("cameras"), io.String.Input("filename_prefix", default="diffportrait3d/cameras")],
            outputs=[io.String.Output(display_name="path")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, cameras, filename_prefix) -> io.NodeOutput:
        import folder_paths

        cameras = check_cameras(cameras)
        try:
            folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
                filename_prefix, folder_paths.get_output_directory()
            )
        except Exception:  # ComfyUI raises a bare Exception for a prefix that leaves the output folder
            raise ValueError(
                f"filename_prefix: '{filename_prefix}' would write outside ComfyUI's output folder; "
                "give a name inside it, e.g. diffportrait3d/cameras"
            ) from None
        os.makedirs(folder, exist_ok=True)
        filename = f"{name}_{counter:05}.json"
        path = os.path.join(folder, filename)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(cameras.to_json())
        # "text" is shown in the frontend; "json" names the file like saved images so HTTP clients can fetch it
        # through /view (python -m diffportrait3d run --server does).
        saved = {"filename": filename, "subfolder": subfolder, "type": "output"}
        return io.NodeOutput(path, ui={**ui.PreviewText(path).as_dict(), "json": [saved]})


def _look_inputs():
    return [
        io.String.Input("skin", default="#dbad91", tooltip="skin colour #rrggbb"),
        io.String.Input("hair", default="#33241a", tooltip="hair colour #rrggbb"),
        io.String.Input("background", default="#ffffff", tooltip="background colour #rrggbb"),
        io.Float.Input("hair_volume", default=1.5, min=0.0, max=6.0, step=0.1, tooltip="hair thickness over the scalp (cm)"),
        io.Float.Input("head_scale", default=1.0, min=0.5, max=2.0, step=0.01, tooltip="head size relative to the official framing"),
        io.Float.Input("eye_height", default=DEFAULT_EYE_HEIGHT, min=-0.3, max=0.3, step=0.005, tooltip="world height of the eyes (EG3D units); + moves the head up"),
    ]


class PoseTemplateHead(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DPoseTemplateHead",
            display_name="DiffPortrait3D Pose Condition (Template Head)",
            category=CATEGORY,
            description="One condition image per camera: a procedural head rendered at that view, framed like the "
            "official condition renders. No model download needed.",
            inputs=[
                Cameras.Input("cameras"),
                io.Int.Input("size", default=512, min=64, max=MAX_SIZE, step=8),
                *_look_inputs(),
                io.Int.Input("antialias", default=1, min=1, max=4, tooltip="supersampling factor (1 = off)"),
            ],
            outputs=[io.Image.Output(display_name="images"), io.Mask.Output(display_name="masks")],
        )

    @classmethod
    def execute(cls, cameras, size, skin, hair, background, hair_volume, head_scale, eye_height, antialias) -> io.NodeOutput:
        cameras = check_cameras(cameras)
        look = HeadLook(
            skin=parse_hex_colour(skin, "skin"), hair=parse_hex_colour(hair, "hair"),
            hair_volume_cm=hair_volume, head_scale=head_scale, eye_height=eye_height,
        )
        check_render_memory(len(cameras), check_pixel_size(size), antialias)
        images, masks = render_template_head(cameras, size, size, look, parse_hex_colour(background, "background"), antialias)
        require_visible(masks, "cameras: the template head", "aim those cameras at the head (pivot near 0, 0, 0) or lower their focal")
        return io.NodeOutput(images, masks)


class PoseDrivingFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DPoseDrivingFrames",
            display_name="DiffPortrait3D Pose Condition (Driving Frames)",
            category=CATEGORY,
            description="Condition images from frames of any person turning their head: each camera gets the frame "
            "with the nearest pose, re-framed to the official head size and position.",
            inputs=[
                Cameras.Input("cameras"),
                io.Image.Input("frames"),
                io.Int.Input("size", default=512, min=64, max=MAX_SIZE, step=8),
                io.Combo.Input("frame_poses", options=["linear_sweep", "per_frame"], default="linear_sweep",
                               tooltip="linear_sweep: the head turns at constant speed from yaw_start to yaw_end; per_frame: one 'yaw, pitch' line per frame"),
                io.Float.Input("yaw_start", default=-45.0, min=-180.0, max=180.0, step=1.0, tooltip="yaw of the first frame (degrees, same sign as the cameras)"),
                io.Float.Input("yaw_end", default=45.0, min=-180.0, max=180.0, step=1.0, tooltip="yaw of the last frame (degrees)"),
                io.String.Input("per_frame_angles", multiline=True, default="", tooltip="per_frame: 'yaw, pitch' degrees, one line per frame"),
                io.String.Input("background", default="#ffffff"),
                io.Mask.Input("frame_masks", optional=True, tooltip="person masks; without them the background is estimated from the frame border"),
            ],
            outputs=[io.Image.Output(display_name="images"), io.Mask.Output(display_name="masks")],
        )

    @classmethod
    def execute(cls, cameras, frames, size, frame_poses, yaw_start, yaw_end, per_frame_angles, background, frame_masks=None) -> io.NodeOutput:
        cameras = check_cameras(cameras)
        check_render_memory(len(cameras), check_pixel_size(size))
        count = frames.shape[0]
        if count == 0:
            raise ValueError("frames: the image batch is empty; connect the frames of a video (e.g. Load Video, Load Image)")
        if not bool(torch.isfinite(frames).all()):
            raise ValueError("frames: some pixels are NaN or infinite; check the node that makes the frames")
        if frame_poses == "per_frame":
            angles = parse_keyframes(per_frame_angles, name="per_frame_angles")[:, :2]
            if angles.shape[0] != count:
                raise ValueError(f"per_frame_angles: {angles.shape[0]} lines for {count} frames; write one 'yaw, pitch' per frame")
        else:
            angles = linear_sweep_angles(count, yaw_start, yaw_end)
        if frame_masks is None:
            masks = estimate_foreground(frames[..., :3])
        else:
            if frame_masks.shape[0] not in (1, count) or frame_masks.shape[-2:] != frames.shape[1:3]:
                raise ValueError(f"frame_masks: need {count} masks of {tuple(frames.shape[1:3])}, got {tuple(frame_masks.shape)}")
            masks = frame_masks.expand(count, -1, -1)
        camera_angles = torch.rad2deg(cameras.yaw_pitch_roll()[:, :2])
        chosen = assign_frames(angles, camera_angles)
        gaps = pose_distances(angles, camera_angles).amin(dim=1)
        far = (gaps > MAX_POSE_GAP_DEG).nonzero().flatten().tolist()
        if far:
            raise ValueError(
                f"cameras: views {far} (0-based) are up to {float(gaps.max()):.0f} degrees from the pose of the nearest frame "
                f"(more than {MAX_POSE_GAP_DEG:g} shows another side of the head); the frames cover yaw "
                f"{float(angles[:, 0].min()):g} to {float(angles[:, 0].max()):g}. Give frames that turn that far "
                "(and their yaw_start/yaw_end or per_frame_angles), or use the template head for those views"
            )
        headless = [int(frame) for frame in chosen.unique() if head_box(masks[frame]) is None]
        if headless:
            views = [view for view, frame in enumerate(chosen.tolist()) if frame in headless]
            which = f"frames {headless} (0-based, chosen for views {views})"
            problem = f"frame_masks: the masks of {which} are empty" if frame_masks is not None else f"frames: no head found in {which}"
            raise ValueError(f"{problem}; give frame_masks with the person in white, or frames of a head on a plain background")
        images, out_masks = reframe(frames[chosen, ..., :3], masks[chosen], size, official_head_box(size), parse_hex_colour(background, "background"))
        return io.NodeOutput(images, out_masks)


def _template_frame():
    """Top (world y) and width (world units) of the default template head, to fit user meshes to."""
    look = HeadLook()
    side = head_radius_cm(torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64), look)
    top = head_radius_cm(torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), look)
    return float(top) * WORLD_UNITS_PER_CM + look.eye_height, 2 * float(side) * WORLD_UNITS_PER_CM


class PoseMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DPoseMesh",
            display_name="DiffPortrait3D Pose Condition (OBJ Mesh)",
            category=CATEGORY,
            description="Condition images from your own head mesh (Wavefront OBJ, Y up, face toward +Z), "
            "rendered with the same rasteriser and shading as the template head.",
            inputs=[
                Cameras.Input("cameras"),
                io.String.Input("obj_path", default="", tooltip="name of an .obj file in ComfyUI's input folder"),
                io.Combo.Input("placement", options=["fit_to_template", "as_is"], default="fit_to_template",
                               tooltip="fit_to_template: scale/centre to the template head's width and crown; as_is: coordinates are EG3D world units"),
                io.Int.Input("size", default=512, min=64, max=MAX_SIZE, step=8),
                io.String.Input("colour", default="#dbad91", tooltip="surface colour when the OBJ has no vertex colours"),
                io.String.Input("background", default="#ffffff"),
                io.Boolean.Input("two_sided", default=True, tooltip="draw both sides of every triangle (for meshes with mixed winding)"),
            ],
            outputs=[io.Image.Output(display_name="images"), io.Mask.Output(display_name="masks")],
        )

    @classmethod
    def execute(cls, cameras, obj_path, placement, size, colour, background, two_sided) -> io.NodeOutput:
        cameras = check_cameras(cameras)
        check_render_memory(len(cameras), check_pixel_size(size))
        path = input_file(obj_path, "obj_path", "head.obj")
        shown = f"obj_path (file '{obj_path.strip()[:200]}')"
        try:
            vertices, faces, colours = load_obj(path)
            if placement == "fit_to_template":
                top, width = _template_frame()
                vertices = fit_to_head_frame(vertices, top, width)
        except ValueError as error:
            raise ValueError(f"{shown}: {error}") from error
        if colours is None:
            colours = torch.tensor(parse_hex_colour(colour, "colour")).expand(vertices.shape[0], 3)
        images, masks = render_mesh_views(
            vertices, faces, cameras, size, size, colours, background=parse_hex_colour(background, "background"),
            cull=None if two_sided else "back",
        )
        require_visible(
            masks, f"{shown}: the mesh", "with placement as_is the coordinates are EG3D world units (the head at the origin, "
            "about 0.4 tall, face toward +Z): try fit_to_template, or two_sided on if the triangles face inward",
        )
        return io.NodeOutput(images, masks)


class PoseDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DPoseDepth",
            display_name="DiffPortrait3D Pose Condition (Depth Relief)",
            category=CATEGORY,
            description="Condition images from a frontal depth map (e.g. Depth Anything; bright = near), turned into a "
            "relief surface and re-rendered at every camera. Best for small yaw angles.",
            inputs=[
                Cameras.Input("cameras"),
                io.Image.Input("depth"),
                io.Int.Input("size", default=512, min=64, max=MAX_SIZE, step=8),
                io.Float.Input("relief", default=0.35, min=0.01, max=2.0, step=0.01, tooltip="depth range of the surface in world units (a face is ~0.35)"),
                io.Float.Input("background_below", default=0.08, min=0.0, max=1.0, step=0.01, tooltip="depth values below this are background"),
                io.String.Input("background", default="#ffffff"),
                io.Image.Input("colour", optional=True, tooltip="picture to paint on the surface (same framing as depth)"),
                io.Mask.Input("mask", optional=True, tooltip="foreground mask (same framing as depth)"),
            ],
            outputs=[io.Image.Output(display_name="images"), io.Mask.Output(display_name="masks")],
        )

    @classmethod
    def execute(cls, cameras, depth, size, relief, background_below, background, colour=None, mask=None) -> io.NodeOutput:
        cameras = check_cameras(cameras)
        check_render_memory(len(cameras), check_pixel_size(size))
        if depth.shape[0] == 0:
            raise ValueError("depth: the image batch is empty; connect a depth map (e.g. from Depth Anything)")
        depth_map = depth[0, ..., :3].mean(-1)
        if not bool(torch.isfinite(depth_map).all()):
            raise ValueError("depth: some values are NaN or infinite; check the node that makes the depth map")
        if colour is not None and colour.shape[1:3] != depth.shape[1:3]:
            raise ValueError(f"colour: must match the depth size {tuple(depth.shape[1:3])}, got {tuple(colour.shape[1:3])}")
        if mask is not None and mask.shape[-2:] != depth.shape[1:3]:
            raise ValueError(f"mask: must match the depth size {tuple(depth.shape[1:3])}, got {tuple(mask.shape[-2:])}")
        vertices, faces, colours = depth_relief_mesh(
            depth_map, frontal_camera_like(cameras), None if colour is None else colour[0],
            None if mask is None else mask.reshape(-1, *mask.shape[-2:])[0], relief, background_below,
        )
        if faces.shape[0] == 0:
            raise ValueError("depth: nothing above background_below; lower background_below or check the depth map")
        images, masks = render_mesh_views(
            vertices, faces, cameras, size, size, colours, background=parse_hex_colour(background, "background"), cull=None
        )
        require_visible(masks, "depth: the relief surface", "check the depth map and background_below", every_view=False)
        return io.NodeOutput(images, masks)


class PreviewGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DPreviewGrid",
            display_name="DiffPortrait3D Preview Grid",
            category=CATEGORY,
            description="Tile a batch of images (e.g. the condition images) into one picture.",
            inputs=[
                io.Image.Input("images"),
                io.Int.Input("columns", default=0, min=0, max=64, tooltip="0 = about square"),
                io.Int.Input("gap", default=4, min=0, max=64),
            ],
            outputs=[io.Image.Output(display_name="grid")],
        )

    @classmethod
    def execute(cls, images, columns, gap) -> io.NodeOutput:
        if images.shape[0] == 0:
            raise ValueError("images: the batch is empty; connect the images to tile (e.g. a Pose Condition node's images)")
        columns = columns if columns > 0 else math.ceil(math.sqrt(images.shape[0]))
        return io.NodeOutput(image_grid(images, columns, gap))


NODES = [CameraPath, CamerasFromJSON, SaveCameraJSON, PoseTemplateHead, PoseDrivingFrames, PoseMesh, PoseDepth, PreviewGrid]
