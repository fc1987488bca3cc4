"""ComfyUI workflow formats: the API prompt (what ``POST /prompt`` runs) and the UI workflow (what the
frontend saves and loads by drag and drop, version 0.4), built from one description.

Node definitions are dicts shaped like ``GET /object_info`` entries (``input``, ``input_order``,
``output``, ``output_name``). Pure Python: nothing here imports ``comfy``.

Facts about the UI format used here (learned from the frontend and ComfyUI's own templates):

- ``nodes[].inputs`` lists sockets: every non-widget input in definition order (optional ones marked
  ``shape: 7``), then the widget inputs that a link feeds (``widget: {name}``); a link's ``to_slot``
  indexes this list, its ``from_slot`` the node's ``outputs``.
- ``widgets_values`` holds one value per widget input in definition order, linked ones included. An input
  with ``control_after_generate`` is followed by its mode ("fixed", "randomize", ...); an ``image_upload``
  combo by the upload button's value "image".
- ``links`` rows are ``[link_id, from_node, from_slot, to_node, to_slot, type]``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
NOTE_TYPES = {"Note", "MarkdownNote"}  # frontend-only nodes: in the UI workflow, never in the API prompt
OPTIONAL_SHAPE = 7
COLUMN_WIDTH = 400
COLUMN_GAP = 40
NODE_GAP = 50


def is_link(value) -> bool:
    """An API input value that names another node's output: ``["node_id", slot]``."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def input_specs(definition: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, optional) of every required then optional input, hidden ones left out."""
    specs = []
    for section, optional in (("required", False), ("optional", True)):
        entries = definition["input"].get(section, {})
        for name in definition.get("input_order", {}).get(section, list(entries)):
            spec = entries[name]
            specs.append((name, list(spec) if isinstance(spec, list | tuple) else [spec], optional))
    return specs


def spec_options(spec: list) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_options(spec: list) -> list | None:
    """The choices of a combo input (old style ``[[...], {...}]`` or ``["COMBO", {"options": [...]}]``)."""
    if isinstance(spec[0], list | tuple):
        return list(spec[0])
    if spec[0] == "COMBO":
        return list(spec_options(spec).get("options", []))
    return None


def input_type(spec: list) -> str:
    return "COMBO" if combo_options(spec) is not None else str(spec[0])


def is_widget(spec: list) -> bool:
    return input_type(spec) in WIDGET_TYPES and not spec_options(spec).get("forceInput", False)


def default_value(spec: list):
    options = spec_options(spec)
    if "default" in options:
        return options["default"]
    choices = combo_options(spec)
    if choices:
        return choices[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(input_type(spec))


@dataclass
class Node:
    """One node of a workflow description: API inputs (values or ``(node_id, slot)`` links), title, column."""

    node_id: str
    class_type: str
    title: str
    column: int
    inputs: dict = field(default_factory=dict)
    controls: dict = field(default_factory=dict)  # widget name -> control_after_generate mode


@dataclass
class Note:
    """A frontend note (MarkdownNote) shown in the UI workflow only."""

    node_id: str
    text: str
    column: int
    title: str = "Read me"


@dataclass
class Group:
    title: str
    columns: tuple[int, ...]
    colour: str = "#3f789e"


@dataclass
class Workflow:
    """A workflow described once; :func:`api_prompt` and :func:`ui_workflow` write its two formats."""

    name: str
    nodes: list = field(default_factory=list)
    groups: list = field(default_factory=list)

    def add(self, node_id, class_type, title, column, controls=None, **inputs) -> str:
        inputs = {key: [str(value[0]), value[1]] if isinstance(value, tuple) else value for key, value in inputs.items()}
        self.nodes.append(Node(str(node_id), class_type, title, column, inputs, dict(controls or {})))
        return str(node_id)

    def note(self, node_id, text, column, title="Read me") -> None:
        self.nodes.append(Note(str(node_id), text, column, title))

    def node(self, node_id) -> Node:
        return next(n for n in self.nodes if n.node_id == str(node_id))

    def api_nodes(self) -> list[Node]:
        return [n for n in self.nodes if isinstance(n, Node)]


class WorkflowError(ValueError):
    pass


def complete_inputs(workflow: Workflow, definitions: dict) -> None:
    """Fill every widget (optional ones too: the frontend saves them) the description leaves out with its
    definition's default; reject unknown inputs."""
    for node in workflow.api_nodes():
        definition = definitions.get(node.class_type)
        if definition is None:
            raise WorkflowError(f"node {node.node_id} ({node.title}): no node type '{node.class_type}' in this ComfyUI")
        specs = {name: spec for name, spec, _ in input_specs(definition)}
        unknown = sorted(set(node.inputs) - set(specs))
        if unknown:
            raise WorkflowError(f"node {node.node_id} ({node.class_type}): unknown inputs {unknown}; it has {list(specs)}")
        for name, spec, _ in input_specs(definition):
            if name not in node.inputs and is_widget(spec):
                node.inputs[name] = default_value(spec)


def api_prompt(workflow: Workflow) -> dict:
    """The API-format prompt: ``{node_id: {"inputs", "class_type", "_meta": {"title"}}}``."""
    return {
        node.node_id: {"inputs": dict(node.inputs), "class_type": node.class_type, "_meta": {"title": node.title}}
        for node in workflow.api_nodes()
    }


def estimated_size(node, definition: dict | None) -> list[int]:
    if isinstance(node, Note):
        return [COLUMN_WIDTH - 40, 60 + 18 * (node.text.count("\n") + 1)]
    specs = input_specs(definition)
    sockets = sum(1 for name, spec, _ in specs if not is_widget(spec) or is_link(node.inputs.get(name)))
    widgets = sum(1 for _, spec, _ in specs if is_widget(spec))
    multiline = sum(1 for _, spec, _ in specs if spec_options(spec).get("multiline"))
    height = 36 + 22 * max(sockets, len(definition["output"])) + 26 * widgets + 60 * multiline
    if definition.get("output_node") or any(spec_options(spec).get("image_upload") for _, spec, _ in specs):
        height += 260  # room for the image preview
    return [COLUMN_WIDTH - 40, height]


def execution_order(workflow: Workflow) -> dict[str, int]:
    """A topological order of the nodes (notes first), as the UI's ``order`` field."""
    order, done = {}, set()
    pending = list(workflow.nodes)
    while pending:
        for node in pending:
            deps = [] if isinstance(node, Note) else [v[0] for v in node.inputs.values() if is_link(v)]
            if all(dep in done for dep in deps):
                order[node.node_id] = len(order)
                done.add(node.node_id)
                pending.remove(node)
                break
        else:
            raise WorkflowError(f"workflow {workflow.name}: the links form a cycle or name missing nodes")
    return order


def ui_workflow(workflow: Workflow, definitions: dict) -> dict:
    """The UI-format workflow (version 0.4) of ``workflow``: nodes laid out in columns, the link table,
    groups, and notes. ``definitions`` must hold every node type used."""
    ui_nodes, links = {}, []
    heights: dict[int, int] = {}
    for node in workflow.nodes:
        definition = None if isinstance(node, Note) else definitions[node.class_type]
        size = estimated_size(node, definition)
        y = heights.get(node.column, 0)
        heights[node.column] = y + size[1] + NODE_GAP
        entry = {
            "id": int(node.node_id),
            "type": "MarkdownNote" if isinstance(node, Note) else node.class_type,
            "pos": [node.column * (COLUMN_WIDTH + COLUMN_GAP), y],
            "size": size,
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": [],
            "outputs": [],
            "title": node.title,
            "properties": {"Node name for S&R": "MarkdownNote" if isinstance(node, Note) else node.class_type},
            "widgets_values": [node.text] if isinstance(node, Note) else [],
        }
        if definition is not None:
            names = definition.get("output_name") or definition["output"]
            entry["outputs"] = [
                {"name": str(name), "type": str(kind), "links": []}
                for name, kind in zip(names, definition["output"], strict=True)
            ]
            linked_widgets = []
            for name, spec, optional in input_specs(definition):
                value = node.inputs.get(name)
                if is_widget(spec):
                    entry["widgets_values"].append(value if not is_link(value) else default_value(spec))
                    if spec_options(spec).get("control_after_generate"):
                        entry["widgets_values"].append(node.controls.get(name, "fixed"))
                    if spec_options(spec).get("image_upload"):
                        entry["widgets_values"].append("image")
                    if is_link(value):
                        linked_widgets.append({"name": name, "type": input_type(spec), "widget": {"name": name}, "link": None})
                else:
                    socket = {"name": name, "type": input_type(spec), "link": None}
                    if optional:
                        socket["shape"] = OPTIONAL_SHAPE
                    entry["inputs"].append(socket)
            entry["inputs"].extend(linked_widgets)
        ui_nodes[node.node_id] = entry
    for node in workflow.api_nodes():
        for name, value in node.inputs.items():
            if not is_link(value):
                continue
            source = ui_nodes.get(value[0])
            if source is None or value[1] >= len(source["outputs"]):
                raise WorkflowError(f"node {node.node_id} input {name}: links to missing output {value}")
            target = ui_nodes[node.node_id]
            to_slot = next(i for i, socket in enumerate(target["inputs"]) if socket["name"] == name)
            link_id = len(links) + 1
            kind = source["outputs"][value[1]]["type"]
            links.append([link_id, int(value[0]), value[1], int(node.node_id), to_slot, kind])
            target["inputs"][to_slot]["link"] = link_id
            source["outputs"][value[1]]["links"].append(link_id)
    order = execution_order(workflow)
    for node_id, entry in ui_nodes.items():
        entry["order"] = order[node_id]
        for output in entry["outputs"]:
            output["links"] = output["links"] or None
    groups = []
    for index, group in enumerate(workflow.groups, start=1):
        members = [ui_nodes[n.node_id] for n in workflow.nodes if n.column in group.columns]
        left = min(m["pos"][0] for m in members) - 20
        top = min(m["pos"][1] for m in members) - 70
        right = max(m["pos"][0] + m["size"][0] for m in members) + 20
        bottom = max(m["pos"][1] + m["size"][1] for m in members) + 20
        groups.append({"id": index, "title": group.title, "bounding": [left, top, right - left, bottom - top],
                       "color": group.colour, "font_size": 24, "flags": {}})
    ids = [int(n.node_id) for n in workflow.nodes]
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"diffportrait3d/workflows/{workflow.name}")),
        "revision": 0,
        "last_node_id": max(ids),
        "last_link_id": len(links),
        "nodes": sorted(ui_nodes.values(), key=lambda n: n["id"]),
        "links": links,
        "groups": groups,
        "config": {},
        "extra": {"ds": {"scale": 0.6, "offset": [60, 120]}},
        "version": 0.4,
    }


def links_of_ui(ui: dict) -> dict[tuple[str, str], list]:
    """``{(to_node, input_name): [from_node, from_slot]}`` read from a UI workflow's link table."""
    nodes = {node["id"]: node for node in ui["nodes"]}
    result = {}
    for link_id, from_node, from_slot, to_node, to_slot, _ in ui["links"]:
        socket = nodes[to_node]["inputs"][to_slot]
        if socket.get("link") != link_id:
            raise WorkflowError(f"link {link_id}: node {to_node} input slot {to_slot} does not point back at it")
        result[(str(to_node), socket["name"])] = [str(from_node), from_slot]
    return result


def ui_matches_api(ui: dict, prompt: dict) -> list[str]:
    """Differences between a UI workflow and an API prompt in node set, types, titles and links (widget values
    need the node definitions and are compared elsewhere). Empty when they describe the same graph."""
    problems = []
    ui_nodes = {str(n["id"]): n for n in ui["nodes"] if n["type"] not in NOTE_TYPES}
    if set(ui_nodes) != set(prompt):
        problems.append(f"node ids differ: UI only {sorted(set(ui_nodes) - set(prompt))}, API only {sorted(set(prompt) - set(ui_nodes))}")
    api_links = {
        (node_id, name): value
        for node_id, node in prompt.items()
        for name, value in node["inputs"].items()
        if is_link(value)
    }
    ui_links = links_of_ui(ui)
    if ui_links != api_links:
        differing = sorted(key for key in set(ui_links) | set(api_links) if ui_links.get(key) != api_links.get(key))
        problems.append("links differ: " + ", ".join(
            f"node {node_id}.{name}: UI {ui_links.get((node_id, name))}, API {api_links.get((node_id, name))}"
            for node_id, name in differing
        ))
    for node_id in set(ui_nodes) & set(prompt):
        if ui_nodes[node_id]["type"] != prompt[node_id]["class_type"]:
            problems.append(f"node {node_id}: UI type {ui_nodes[node_id]['type']}, API {prompt[node_id]['class_type']}")
        if ui_nodes[node_id].get("title") != prompt[node_id].get("_meta", {}).get("title"):
            problems.append(f"node {node_id}: UI title {ui_nodes[node_id].get('title')!r}, API {prompt[node_id].get('_meta')}")
    if ui.get("last_link_id") != len(ui["links"]) or ui.get("last_node_id") != max(int(n["id"]) for n in ui["nodes"]):
        problems.append("last_node_id/last_link_id do not match the nodes and links")
    return problems


def check_against_definitions(prompt: dict, definitions: dict) -> list[str]:
    """Every node type exists; every input name is known; required inputs are given; widget values have the
    widget's type; every link points at an existing output of the input's type. Empty list when valid."""
    problems = []
    for node_id, node in prompt.items():
        definition = definitions.get(node["class_type"])
        if definition is None:
            problems.append(f"node {node_id}: unknown node type {node['class_type']}")
            continue
        specs = {name: (spec, optional) for name, spec, optional in input_specs(definition)}
        for name in node["inputs"]:
            if name not in specs:
                problems.append(f"node {node_id} ({node['class_type']}): unknown input '{name}'")
        for name, (spec, optional) in specs.items():
            value = node["inputs"].get(name)
            kind = input_type(spec)
            if value is None:
                if not optional:
                    problems.append(f"node {node_id} ({node['class_type']}): required input '{name}' missing")
                continue
            if is_link(value):
                source = prompt.get(value[0])
                if source is None or source["class_type"] not in definitions:
                    problems.append(f"node {node_id} input '{name}': links to missing node {value[0]}")
                    continue
                outputs = definitions[source["class_type"]]["output"]
                if value[1] >= len(outputs):
                    problems.append(f"node {node_id} input '{name}': node {value[0]} has no output {value[1]}")
                elif str(outputs[value[1]]) != kind and "*" not in (kind, str(outputs[value[1]])):
                    problems.append(f"node {node_id} input '{name}' ({kind}) is fed {outputs[value[1]]} by node {value[0]}")
            elif not is_widget(spec):
                problems.append(f"node {node_id} input '{name}' ({kind}) needs a link, got {value!r}")
            elif not value_fits(value, kind):
                problems.append(f"node {node_id} input '{name}' ({kind}) has value {value!r}")
    return problems


def value_fits(value, kind: str) -> bool:
    if kind == "INT":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "FLOAT":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    return isinstance(value, str)
