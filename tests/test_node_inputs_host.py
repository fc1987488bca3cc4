"""Bad node inputs through ComfyUI's own validation and executor, in the shipped official workflow with the
tiny model: limits are ComfyUI's min/max (no node of the pack hides them behind ``validate_inputs``),
cross-input errors come once and name the inputs, and a noise made for other steps cannot change the image."""

import asyncio
import uuid

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.host

APPEARANCE, NOISE, SAMPLER = "24", "32", "33"  # node ids of the shipped official workflow


@pytest.fixture
def tiny_run(comfy_host, tiny_model_files, tmp_path, workflow_kit):
    """``run(edit) -> Outcome``: the tiny official workflow, edited by ``edit(prompt)``, validated and executed
    by ComfyUI (PromptExecutor), its views copied to a folder of their own."""
    import execution
    import folder_paths

    from diffportrait3d.cli.workflow_jobs import job_prompt
    from diffportrait3d.cli.workflow_runner import ExecutorMessages

    workflow_kit.write_test_images(tmp_path / "input")
    saved = folder_paths.get_input_directory(), folder_paths.get_output_directory()
    folder_paths.add_model_folder_path("diffportrait3d", str(tiny_model_files))
    folder_paths.set_input_directory(str(tmp_path / "input"))
    runs = []

    def run(edit=None):
        name = f"run{len(runs)}"
        folder_paths.set_output_directory(str(tmp_path / name))
        prompt = job_prompt(workflow_kit.tiny_workflow(size=64, steps=2), "portrait.png", name, seed=3)
        if edit is not None:
            edit(prompt)
        prompt_id = str(uuid.uuid4())
        valid, _, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
        outcome = Outcome(node_errors, tmp_path / name)
        runs.append(outcome)
        if valid:
            messages = ExecutorMessages()
            executor = execution.PromptExecutor(messages, cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0.0})
            executor.execute(prompt, prompt_id, {"client_id": "tests"}, outputs)
            outcome.execution_errors = [data for event, data in messages.messages if event == "execution_error"]
        return outcome

    yield run
    folder_paths.set_input_directory(saved[0])
    folder_paths.set_output_directory(saved[1])


class Outcome:
    def __init__(self, node_errors: dict, output: object):
        self.node_errors = node_errors
        self.output = output
        self.execution_errors: list[dict] = []

    def errors_of(self, node_id: str) -> list[tuple[str, str]]:
        """(details, message) of each validation error of ``node_id``."""
        return [(error["details"], error["message"]) for error in self.node_errors.get(node_id, {}).get("errors", [])]

    def views(self) -> list[np.ndarray]:
        files = sorted(self.output.glob("diffportrait3d/*/views*.png"))
        return [np.asarray(Image.open(path), dtype=np.int16) for path in files]


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"strength": -1.0}, [("strength", "Value -1.0 smaller than min of 0.0")]),
        ({"strength": 1e6}, [("strength", "Value 1000000.0 bigger than max of 3.0")]),
        ({"start_percent": -1.0, "end_percent": 5.0},
         [("start_percent", "Value -1.0 smaller than min of 0.0"), ("end_percent", "Value 5.0 bigger than max of 1.0")]),
    ],
)
def test_appearance_reference_limits_are_comfyuis_own(tiny_run, inputs, expected):
    outcome = tiny_run(lambda prompt: prompt[APPEARANCE]["inputs"].update(inputs))
    assert sorted(outcome.errors_of(APPEARANCE)) == sorted(expected)
    assert not outcome.execution_errors


def test_start_after_end_is_one_message_naming_both_inputs(tiny_run):
    outcome = tiny_run(lambda prompt: prompt[APPEARANCE]["inputs"].update(start_percent=0.8, end_percent=0.2))
    assert not outcome.node_errors
    [error] = outcome.execution_errors
    assert error["node_id"] == APPEARANCE and error["exception_type"].endswith("ValueError")
    assert error["exception_message"].startswith("start_percent (0.8) is after end_percent (0.2)")
    assert "set start_percent at or below end_percent" in error["exception_message"]


def test_window_stride_larger_than_window_size_names_both_inputs(tiny_run):
    outcome = tiny_run(lambda prompt: prompt[SAMPLER]["inputs"].update(window_mode="sliding", window_size=4, window_stride=6))
    [error] = outcome.execution_errors
    assert error["node_id"] == SAMPLER
    assert error["exception_message"].startswith("window_stride (6) is larger than window_size (4)")


def test_pose_conditions_of_another_aspect_than_the_views_are_refused(tiny_run):
    """ComfyUI's ControlNet would centre-crop 64x64 poses onto 128x64 views: each view a cropped pose."""
    outcome = tiny_run(lambda prompt: prompt["31"]["inputs"].update(width=128, height=64))
    [error] = outcome.execution_errors
    assert error["node_id"] == SAMPLER
    assert error["exception_message"].startswith("positive: the pose condition images are 64x64 (WxH), the views 128x64")


def test_a_noise_made_for_other_steps_gives_the_matched_image(tiny_run):
    """The issue's case: 3D-Aware Noise with steps 10 (or 50) into a 2-step sampler gave another image
    (mean |d| 5.7/255). The sampler now starts any 3D-aware noise at its own first sigma."""
    matched = tiny_run().views()
    assert len(matched) == 8
    for noise_steps in (10, 50):
        mismatched = tiny_run(lambda prompt, n=noise_steps: prompt[NOISE]["inputs"].update(steps=n)).views()
        # The same float32 computation but for the start state's scale factor: at most one 8-bit level apart.
        assert max(int(np.abs(a - b).max()) for a, b in zip(matched, mismatched, strict=True)) <= 1
