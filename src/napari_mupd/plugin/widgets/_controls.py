"""Controls shared by the dock widgets: model and device pickers, conditions."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import napari
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    Select,
    Widget,
    create_widget,
)
from magicgui.widgets.bases import CategoricalWidget

from napari_mupd.errors import ConditionError, MuPDError, RegionError
from napari_mupd.imaging.regions import Region
from napari_mupd.model.config import MuPDConfig
from napari_mupd.model.encoders.text import PromptWords, TextTokenizer
from napari_mupd.model.loading import available_devices
from napari_mupd.plugin.layers import region_from_shape, region_from_view
from napari_mupd.resources import BUNDLED_MODEL, resolve_model

FIELD_OF_VIEW = "field of view"
SHAPES = "shapes (selected, else all)"
WHOLE_IMAGE = "whole image"
BUNDLED = f"bundled ({BUNDLED_MODEL})"
FOLDER = "folder ..."


class ModelPicker(Container):
    """The bundled checkpoint or a folder, a device, and the targets the model offers.

    ``kinds`` filters the targets ("H&E", "IHC", "mIF"); ``multiple`` offers a list to
    pick several from. Functions in ``on_config`` get each newly read config.
    """

    def __init__(self, kinds: tuple[str, ...], multiple: bool = False) -> None:
        self.kinds, self.multiple = kinds, multiple
        self.on_config: list[Callable[[MuPDConfig], None]] = []
        self.source = ComboBox(choices=[BUNDLED, FOLDER], value=BUNDLED, label="model")
        self.folder = FileEdit(
            mode=FileDialogMode.EXISTING_DIRECTORY, label="folder", tooltip="a MuPD checkpoint"
        )
        self.folder.visible = False
        self.device = ComboBox(choices=available_devices(), label="device", value="auto")
        self._targets: list[str] = []
        menu = Select if multiple else ComboBox
        self.target = menu(label="targets" if multiple else "target", choices=self._choices)
        self.about = Label(value="")
        super().__init__(
            widgets=[self.source, self.folder, self.device, self.target, self.about], labels=True
        )
        self.margins = (0, 0, 0, 0)
        self.source.changed.connect(self.refresh)
        self.folder.changed.connect(self.refresh)
        self.refresh()

    def _choices(self, _: object) -> list[str]:
        return self._targets

    def use_folder(self, folder: str) -> None:
        """Switch to the checkpoint in ``folder``."""
        self.folder.value = Path(folder)
        self.source.value = FOLDER

    @property
    def path(self) -> str | None:
        """The chosen folder, or None for the bundled checkpoint."""
        return str(self.folder.value) if self.source.value == FOLDER else None

    def config(self) -> MuPDConfig:
        """The chosen checkpoint's config (raises MuPDError when there is none)."""
        return MuPDConfig.load(resolve_model(self.path))

    def refresh(self) -> None:
        """Re-read the checkpoint's targets; say what is wrong in the label."""
        self.folder.visible = self.source.value == FOLDER
        try:
            config = self.config()
        except MuPDError as exc:
            self._targets = []
            self.target.reset_choices()
            self.about.value = f"<font color='orange'>{exc}</font>"
            return
        self._targets = [t for t in config.targets if t.split(":")[0] in self.kinds]
        self.target.reset_choices()
        virtual = [t for t in self._targets if config.resolve_target(t).uses_source]
        if config.default_target in self._targets:  # the model's own first choice
            virtual = [config.default_target]
        first = virtual[:1] or self._targets[:1]
        if first:
            self.target.value = first if self.multiple else first[0]
        name = Path(self.path).name if self.path else BUNDLED_MODEL
        about = f"{name}: {config.resolution} px tiles at {config.mpp:g} µm/px"
        if config.stain_mpp is not None and "IHC" in self.kinds:
            about += f"; virtual stains read at {config.stain_mpp:g} µm/px"
        self.about.value = about
        for callback in self.on_config:
            callback(config)


class WordsLine(Label):
    """The words of a prompt the model's text encoder does not know (spelled out) or cuts
    off past its token limit, in orange under the prompt; hidden when there are none.

    ``use_config`` reads the model's built-in vocabulary (a Hugging Face encoder is only
    asked when the model runs: pass its answer to ``say``); ``check`` runs as the user
    types."""

    def __init__(self) -> None:
        super().__init__(value="")
        self.native.setWordWrap(True)
        self._tokenizer: TextTokenizer | None = None
        self.visible = False

    def use_config(self, config: MuPDConfig) -> None:
        """Check against ``config``'s built-in vocabulary from now on."""
        self._tokenizer = (
            None
            if config.hf_text_encoder
            else TextTokenizer(config.text_vocab, config.text_max_tokens)
        )

    def check(self, text: str) -> None:
        """Show what the vocabulary makes of ``text`` (nothing for an empty prompt)."""
        text = text.strip()
        self.say(self._tokenizer.check_words(text) if self._tokenizer and text else None)

    def say(self, words: PromptWords | None) -> None:
        """Say ``words``' note, or hide the line when all words are known."""
        self.value = f"<font color='orange'>{html.escape(words.note())}</font>" if words else ""
        self.visible = bool(self.value)


class Conditions(Container):
    """Optional text prompt and RNA profile, each with its own guidance scale."""

    def __init__(self, rna_filter: str = "*.csv") -> None:
        self.text = LineEdit(label="text", tooltip="optional, e.g. 'tumour with lymphocytes'")
        self.words = WordsLine()
        self.rna = FileEdit(
            mode=FileDialogMode.EXISTING_FILE,
            filter=rna_filter,
            label="RNA",
            tooltip="optional CSV: gene,value per row",
        )
        self.text_scale = FloatSpinBox(label="text guidance", value=1.0, min=0.0, max=20.0)
        self.rna_scale = FloatSpinBox(label="RNA guidance", value=1.0, min=0.0, max=20.0)
        super().__init__(
            widgets=[self.text, self.words, self.text_scale, self.rna, self.rna_scale],
            labels=True,
        )
        self.margins = (0, 0, 0, 0)
        self.text.changed.connect(lambda: self.words.check(self.text.value))
        self.text.changed.connect(self._show_scales)
        self.rna.changed.connect(self._show_scales)
        self._show_scales()

    def _show_scales(self) -> None:
        """A guidance scale shows only once its condition is given."""
        self.text_scale.visible = bool(self.text.value.strip())
        self.rna_scale.visible = typed_path(self.rna) is not None

    def use_config(self, config: MuPDConfig) -> None:
        """The model whose vocabulary the prompt is checked against."""
        self.words.use_config(config)
        self.words.check(self.text.value)

    def prompt(self) -> str | None:
        """The prompt, or None when empty."""
        return self.text.value.strip() or None

    def rna_path(self) -> str | None:
        """The RNA file, or None; a clear error when it does not exist."""
        value = typed_path(self.rna)
        if value is None or value.is_dir():  # nothing chosen
            return None
        if not value.is_file():
            raise ConditionError(f"RNA file {value} does not exist")
        return str(value)

    def guidance(self, extra: dict[str, float] | None = None) -> float | dict[str, float]:
        """1.0 when every scale is 1, else per-modality scales for the given conditions."""
        scales = {"text": self.text_scale.value, "rna": self.rna_scale.value, **(extra or {})}
        if all(v == 1.0 for v in scales.values()):
            return 1.0
        return scales


def typed_path(edit: FileEdit) -> Path | None:
    """The path typed or chosen in ``edit``; None when it is empty."""
    text = edit.line_edit.value.strip()
    return Path(text).expanduser() if text else None


def button_row(*buttons: Widget) -> Container:
    """Buttons side by side (Run and Cancel)."""
    return Container(widgets=list(buttons), layout="horizontal", labels=False)


def layer_menu(viewer: napari.viewer.Viewer, kind: type, **options: object) -> CategoricalWidget:
    """A menu of ``viewer``'s layers of ``kind`` that follows the layer list, docked or not."""
    menu = create_widget(
        annotation=kind,
        options={
            **options,
            "choices": lambda _: [la for la in viewer.layers if isinstance(la, kind)],
        },
    )
    if not isinstance(menu, CategoricalWidget):
        raise TypeError(f"magicgui made a {type(menu).__name__} for {kind}, not a menu")
    for event in ("inserted", "removed", "reordered"):
        getattr(viewer.layers.events, event).connect(menu.reset_choices)
    return menu


#: Metadata key of the Export dock's tile-preview Shapes layers, never a region to stain.
TILE_PREVIEW = "napari_mupd_tile_preview"


class RegionPicker(Container):
    """A source image layer and regions on it: shapes of a Shapes layer, the view, or
    (with ``whole_image``) all of it."""

    def __init__(
        self, viewer: napari.viewer.Viewer, source_label: str = "source", whole_image: bool = False
    ) -> None:
        self.viewer = viewer
        self.source = layer_menu(viewer, napari.layers.Image, label=source_label)
        modes = [SHAPES, FIELD_OF_VIEW, *([WHOLE_IMAGE] if whole_image else [])]
        self.mode = ComboBox(choices=modes, value=SHAPES, label="region")
        self.shapes = layer_menu(
            viewer, napari.layers.Shapes, label="shapes", nullable=True,
            tooltip="empty: the top Shapes layer",
        )  # fmt: skip
        super().__init__(widgets=[self.source, self.mode, self.shapes], labels=True)
        self.margins = (0, 0, 0, 0)
        self.mode.changed.connect(
            lambda: setattr(self.shapes, "enabled", self.mode.value == SHAPES)
        )

    def image(self) -> napari.layers.Image:
        """The source layer (a clear error when there is none)."""
        if self.source.value is None:
            raise RegionError("open a slide first (File > Open, or File > Open Sample)")
        return self.source.value

    def regions(self) -> list[Region]:
        """The regions, in level-0 pixels of the source layer."""
        image = self.image()
        if self.mode.value == FIELD_OF_VIEW:
            return [region_from_view(self.viewer, image)]
        shapes = self.shapes.value or next(
            (
                la
                for la in reversed(self.viewer.layers)
                if isinstance(la, napari.layers.Shapes) and TILE_PREVIEW not in la.metadata
            ),
            None,
        )
        if shapes is None or len(shapes.data) == 0:
            raise RegionError("draw a rectangle or polygon on a Shapes layer, or use the view")
        chosen = sorted(shapes.selected_data) or range(len(shapes.data))
        return [region_from_shape(shapes, i, image) for i in chosen]

    def region(self) -> Region | None:
        """One region: the first of :meth:`regions`, or None for the whole image."""
        if self.mode.value == WHOLE_IMAGE:
            self.image()
            return None
        return self.regions()[0]
