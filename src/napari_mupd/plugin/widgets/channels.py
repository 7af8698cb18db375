"""The "Channels" dock: which channels of a multichannel slide are layers in the viewer.

A slide with many channels (a 40-plex) opens with layers for its first few only
(`plugin._reader.VISIBLE_CHANNELS`); here the user ticks the channels to show, and
**Apply** adds a layer for each newly ticked channel and removes the layers of the
unticked ones.
"""

from __future__ import annotations

from typing import Any

import napari
from magicgui.widgets import ComboBox, Container, Label, PushButton, Select

from napari_mupd.io import Slide
from napari_mupd.plugin._reader import channel_layer


class ChannelsWidget(Container):
    """Pick a multichannel slide open in the viewer, tick its channels, Apply."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.slide = ComboBox(label="slide", choices=self._slides)
        self.channels = Select(label="channels", choices=self._channels)
        self.apply = PushButton(text="Apply")
        self.status = Label(value="")
        super().__init__(widgets=[self.slide, self.channels, self.apply, self.status])
        for event in ("inserted", "removed"):
            getattr(viewer.layers.events, event).connect(self.refresh)
        self.slide.changed.connect(self._tick_shown)
        self.apply.changed.connect(self.show_ticked)
        self.refresh()

    def _slides(self, _: object = None) -> list[tuple[str, Slide]]:
        """The multichannel slides that have a layer in the viewer, by file name."""
        found: dict[int, tuple[str, Slide]] = {}
        for layer in self.viewer.layers:
            slide = layer.metadata.get("slide")
            if isinstance(slide, Slide) and slide.multichannel:
                found.setdefault(id(slide), (slide.path.name, slide))
        return list(found.values())

    def _channels(self, _: object = None) -> list[tuple[str, int]]:
        slide = self.slide.value
        return [] if slide is None else [(c.name, c.index) for c in slide.channels]

    def refresh(self, *_: object) -> None:
        """Follow the layer list: the slides, then their channels and which are shown."""
        self.slide.reset_choices()
        self._tick_shown()

    def _layers(self, slide: Slide) -> dict[int, Any]:
        """The slide's channel layers in the viewer, by channel index."""
        return {
            layer.metadata["channel_index"]: layer
            for layer in self.viewer.layers
            if layer.metadata.get("slide") is slide and "channel_index" in layer.metadata
        }

    def _tick_shown(self, *_: object) -> None:
        self.channels.reset_choices()
        slide = self.slide.value
        if slide is None:
            self.status.value = "open a multichannel slide"
            return
        shown = sorted(self._layers(slide))
        self.channels.value = shown
        self.status.value = f"{len(shown)} of {len(slide.channels)} channels shown"

    def show_ticked(self) -> None:
        """Add a layer for each ticked channel without one; remove the unticked ones."""
        slide = self.slide.value
        if slide is None:
            return
        ticked = set(self.channels.value)
        layers = self._layers(slide)
        for index in sorted(ticked - set(layers)):  # first add: the slide stays open
            data, kwargs, _ = channel_layer(slide, index)
            self.viewer.add_image(data, **kwargs)
        for index, layer in layers.items():
            if index not in ticked:
                self.viewer.layers.remove(layer)
        self._tick_shown()
