"""Reading order of the examples gallery (sphinx-gallery ``within_subsection_order``).

A module of its own, named in ``conf.py`` by its qualified name, so that
Sphinx can pickle the configuration.
"""

#: Examples in reading order; any other example follows, by file name.
ORDER = (
    "plot_streaming_partial_fit.py",
    "plot_poison_detection_pipeline.py",
    "plot_attack_and_defend.py",
    "plot_grid_search.py",
    "plot_river_progressive_validation.py",
    "plot_river_alarms.py",
)


class ExampleOrder:
    """Sort key: the position in :data:`ORDER`, then the file name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        if filename in ORDER:
            return f"{ORDER.index(filename):03d}"
        return f"999{filename}"

    def __repr__(self):
        return f"<{type(self).__name__}>"
