"""Transition datasets on disk: real (simulator) and synthetic (world-model) experience, with provenance.

The layout is Minari's HDF5 storage, so Farama tools (``minari.MinariDataset(<directory>/data)``) open
physai datasets as they are::

    <directory>/data/main_data.hdf5   episode_{i}/observations   (T+1, *obs_shape)
                                      episode_{i}/actions        (T, *act_shape)
                                      episode_{i}/rewards        (T,) float64
                                      episode_{i}/terminations   (T,) bool
                                      episode_{i}/truncations    (T,) bool
                                      episode_{i}/infos/<column> (T,)  provenance, one row per transition
    <directory>/data/metadata.json    Minari's keys, plus physai's format version, kind, task, provenance
                                      tables, summary counts, generator info and the sha256 of the HDF5 file

Provenance is what lets a trained policy be traced back to the simulator states and the world model
(and scenario prompt) that produced its experience, and lets synthetic branches be compared with the real
states they started from. Every transition carries the same columns (see ``PROVENANCE_COLUMNS``); a column
that does not apply to a transition's source holds its fill value (-1, 0 or NaN).

One deliberate difference from Minari's own collector: Minari stores T+1 info rows (the reset info first),
physai stores T, aligned with actions and rewards, because provenance describes transitions. Minari does
not check info lengths and loads these files unchanged.

A dataset is assembled in a staging directory beside its target and swapped in whole, so a failed or
killed write never leaves a half-written dataset where a good one was.

The package: ``records`` (in-memory forms and provenance), ``spaces`` (Minari's JSON for spaces),
``storage`` (write and read), ``info`` (``physai data info``) and ``lerobot`` (``physai data export``: the
LeRobot v3.0 format, imported on its own so reading a dataset never loads pyarrow).
"""

from physai.synthetic.dataset.info import dataset_info, format_dataset_info
from physai.synthetic.dataset.records import (CONTEXT_COLUMN, DATA_DIR, FORMAT_NAME, FORMAT_VERSION, KINDS,
                                              MAIN_DATA_FILE, METADATA_FILE, MINARI_VERSION, NO_ID,
                                              PER_STEP_COLUMNS, PROVENANCE_COLUMNS, SOURCE_CODES, SOURCE_NAMES,
                                              SOURCE_REAL, SOURCE_SYNTHETIC, DatasetError, Episode, LoadedDataset,
                                              ProvenanceTables, TransitionBatch)
from physai.synthetic.dataset.spaces import space_from_dict, space_to_dict
from physai.synthetic.dataset.storage import checksum_status, read_dataset, read_metadata, write_dataset

__all__ = ["CONTEXT_COLUMN", "DATA_DIR", "FORMAT_NAME", "FORMAT_VERSION", "KINDS", "MAIN_DATA_FILE", "METADATA_FILE",
           "MINARI_VERSION", "NO_ID", "PER_STEP_COLUMNS", "PROVENANCE_COLUMNS", "SOURCE_CODES", "SOURCE_NAMES",
           "SOURCE_REAL", "SOURCE_SYNTHETIC", "DatasetError", "Episode", "LoadedDataset", "ProvenanceTables",
           "TransitionBatch", "checksum_status", "dataset_info", "format_dataset_info", "read_dataset",
           "read_metadata", "space_from_dict", "space_to_dict", "write_dataset"]
