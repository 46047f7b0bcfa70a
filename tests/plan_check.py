"""Record the physical plan of every Spark SQL execution of a block of code, and check them.

How the plans are captured
--------------------------
Spark's SQL status store (``SharedState.statusStore``, fed by ``SQLAppStatusListener``) is
built whether or not the UI runs (the test session has ``spark.ui.enabled=false``). It holds,
for every SQL execution of the application, the plan graph of its *final* physical plan
(adaptive execution posts every re-planned stage, the last post being ``isFinalPlan=true``)
with one node per operator (name and ``simpleString``), including the plans of cached
relations, query stages, reused exchanges and subqueries. It sees every execution, also those
that Delta and ``pyspark.ml`` start inside the JVM. The recorder reads it through py4j after the
block (``SparkPlanGraph.makeDotFile``: one string per execution, parsed here), so recording
costs nothing while the block runs. The plan *text* of the store (``physicalPlanDescription``)
is not used: ``spark.sql.maxPlanStringLength`` (8k in cvm_spark.common.session) cuts it; the graph's
per-node strings are not cut.

A JVM ``QueryExecutionListener`` would need a jar (or a py4j callback server) and only sees
``Dataset`` actions. Wrapping the Python actions alone would miss the executions Delta and ML
run themselves. So the store gives the plans, and thin wrappers around the Python entry points
that start executions (DataFrame actions, readers and writers, ``SparkSession.sql``, Delta
table calls, ML ``fit``/``transform``/``save``/``load``) add what the store cannot know:

* the Python call site: the wrapper puts ``[plan-check #N] <action> at <file>:<line>`` and the
  project frames of the stack into the ``callSite.long`` local property, which Spark copies
  into the ``details`` of every execution started while it is set (also nested ones);
* for collecting actions (``collect``, ``toPandas``, ``take``, ``first``, ...), the number of
  rows and the columns that reached the driver;
* for Java ML fits, the plan of the input DataFrame (ML trains on RDDs, whose jobs are no SQL
  executions, so that plan would otherwise only show up where the input is cached).

The rules (see ``docs/plan-checks.md``)
---------------------------------------
A plan node is *reduced* when the rows it produces are bounded by something other than the
number of input rows: a grouping aggregate whose keys do not include ``account_id`` (a
global aggregate has no keys), a limit of at most ``small_limit`` rows, driver-local data
(``LocalTableScan``, ``OneRowRelation``) or Delta log metadata; any other node is reduced when
all its inputs are. Otherwise it is *row-level* (it carries account, transaction or month
rows).

* ``single-partition``: an ``Exchange SinglePartition``, a ``Coalesce 1``, a range-partitioning
  exchange, a global ``Sort`` or a ``Window``/``WindowGroupLimit`` without partition keys over
  a row-level input. Over a reduced input they are fine: a global ``count`` or
  ``percentile_approx`` plans ``Exchange SinglePartition`` above its *partial* aggregate, which
  sends one row per partition, not the data.
* ``python-udf``: any Python evaluation node (``BatchEvalPython``, ``ArrowEvalPython``,
  ``MapInPandas``, ``FlatMapGroupsInPandas``, ... see ``PYTHON_NODES``).
* ``account-collect``: a collecting action whose plan is row-level, that returns as many rows
  as there are accounts or more, or that returns an ``account_id`` column.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Spark 4.1 physical nodes that run Python on the executors (org.apache.spark.sql.execution
# .python.*Exec, node name = class name without "Exec"), older names included.
PYTHON_NODES = frozenset({
    "BatchEvalPython", "ArrowEvalPython", "BatchEvalPythonUDTF", "ArrowEvalPythonUDTF",
    "ArrowAggregatePython", "ArrowWindowPython", "AggregateInPandas", "WindowInPandas",
    "FlatMapGroupsInPandas", "FlatMapGroupsInArrow", "FlatMapGroupsInBatch",
    "FlatMapCoGroupsInPandas", "FlatMapCoGroupsInArrow", "FlatMapCoGroupsInBatch",
    "MapInPandas", "MapInArrow", "MapInBatch", "PythonMapInArrow", "PythonUDTF",
    "FlatMapGroupsInPandasWithState", "TransformWithStateInPySpark",
    "TransformWithStateInPandas", "PythonWorkerLogs",
})
# any other node whose name says it evaluates Python (future renames)
PYTHON_NODE_PATTERN = re.compile(r"Python|Pandas|PySpark|InArrow|InBatch")

AGGREGATES = frozenset({"HashAggregate", "ObjectHashAggregate", "SortAggregate"})
LIMITS = frozenset({"CollectLimit", "GlobalLimit", "LocalLimit", "TakeOrderedAndProject",
                    "CollectTail", "GlobalLimitAndOffset"})
# leaves whose rows are already on the driver
LOCAL_LEAVES = ("LocalTableScan", "Scan OneRowRelation", "EmptyRelation",
                "LocalTableScanExec")
WINDOWS = frozenset({"Window", "WindowGroupLimit"})
ACCOUNT_KEY = "account_id"

# Python entry points that start SQL executions: (module, class, attribute, kind).
# kind "collect": rows reach the driver (rows and columns recorded); "fit": a Java ML fit
# (input plan recorded); "local": a DataFrame made of driver data (its scan is recorded as
# driver-local); "action": anything else that runs a query.
_COLLECTING = ("collect", "toPandas", "toArrow", "toLocalIterator", "take", "tail", "head",
               "first")
_DF_ACTIONS = ("count", "isEmpty", "show", "foreach", "foreachPartition", "checkpoint",
               "localCheckpoint")
_WRITER = ("save", "saveAsTable", "insertInto", "parquet", "csv", "json", "orc", "text",
           "jdbc")
_WRITER_V2 = ("create", "replace", "createOrReplace", "append", "overwrite",
              "overwritePartitions")
_READER = ("load", "table", "parquet", "csv", "json", "orc", "text")
TARGETS: tuple[tuple[str, str, str, str], ...] = (
    *[("pyspark.sql.classic.dataframe", "DataFrame", a, "collect") for a in _COLLECTING],
    *[("pyspark.sql.classic.dataframe", "DataFrame", a, "action") for a in _DF_ACTIONS],
    *[("pyspark.sql.readwriter", "DataFrameWriter", a, "action") for a in _WRITER],
    *[("pyspark.sql.readwriter", "DataFrameWriterV2", a, "action") for a in _WRITER_V2],
    *[("pyspark.sql.readwriter", "DataFrameReader", a, "action") for a in _READER],
    ("pyspark.sql.session", "SparkSession", "sql", "action"),
    ("pyspark.sql.session", "SparkSession", "createDataFrame", "local"),
    ("pyspark.sql.session", "SparkSession", "table", "action"),
    ("pyspark.sql.catalog", "Catalog", "tableExists", "action"),
    ("delta.tables", "DeltaTable", "isDeltaTable", "action"),
    ("delta.tables", "DeltaTable", "forPath", "action"),
    ("delta.tables", "DeltaTableBuilder", "execute", "action"),
    ("delta.tables", "DeltaMergeBuilder", "execute", "action"),
    ("pyspark.ml.base", "Estimator", "fit", "action"),
    ("pyspark.ml.base", "Transformer", "transform", "action"),
    ("pyspark.ml.wrapper", "JavaEstimator", "_fit_java", "fit"),
    ("pyspark.ml.util", "MLWriter", "save", "action"),
    ("pyspark.ml.util", "JavaMLWriter", "save", "action"),
    ("pyspark.ml.util", "MLReader", "load", "action"),
    ("pyspark.ml.util", "JavaMLReader", "load", "action"),
)

_TOKEN_RE = re.compile(r"\[plan-check #(\d+)\] ")
_NODE_RE = re.compile(r'^\s*(\d+) \[id="node\d+" labelType="html" '
                      r'label="((?:[^"\\]|\\.)*)" tooltip="((?:[^"\\]|\\.)*)"\];\s*$')
_EDGE_RE = re.compile(r"^\s*(\d+)->(\d+);\s*$")
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def _unescape_java(text: str) -> str:
    """Undo commons-text ``StringEscapeUtils.escapeJava``."""
    def one(m: re.Match[str]) -> str:
        s = m.group(1)
        if s[0] == "u" and len(s) == 5:
            return chr(int(s[1:], 16))
        return _ESCAPES.get(s, s)
    return _ESCAPE_RE.sub(one, text)


# --------------------------------------------------------------------------- plan trees


@dataclass
class Node:
    """One physical operator: ``name`` (e.g. ``Exchange``) and ``desc`` (its simpleString)."""

    id: int
    name: str
    desc: str
    metrics: str = ""
    children: list[Node] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        """This node and every node below it (a shared subtree is visited once per path)."""
        yield self
        for child in self.children:
            yield from child.walk()

    def render(self, depth: int = 0, max_depth: int = 4, width: int = 160) -> str:
        """The subtree as indented text (cut at ``max_depth`` levels and ``width`` chars)."""
        desc = self.desc if len(self.desc) <= width else self.desc[:width - 3] + "..."
        lines = ["   " * depth + ("+- " if depth else "") + desc]
        if depth < max_depth:
            lines += [c.render(depth + 1, max_depth, width) for c in self.children]
        elif self.children:
            lines.append("   " * (depth + 1) + "+- ...")
        return "\n".join(lines)


def parse_dot(dot: str) -> list[Node]:
    """Plan trees from ``SparkPlanGraph.makeDotFile``: edges run from child to parent.

    Returns the roots (normally one; subquery roots hang under the node that uses them).
    """
    nodes: dict[int, Node] = {}
    edges: list[tuple[int, int]] = []
    for line in dot.splitlines():
        m = _NODE_RE.match(line)
        if m:
            label = _unescape_java(m.group(2))
            bold = re.search(r"<b>(.*?)</b>", label)
            name = bold.group(1) if bold else label
            metrics = label[bold.end():] if bold else ""
            nodes[int(m.group(1))] = Node(int(m.group(1)), name.strip(),
                                          _unescape_java(m.group(3)),
                                          metrics.replace("<br>", "\n").strip())
            continue
        m = _EDGE_RE.match(line)
        if m:
            edges.append((int(m.group(1)), int(m.group(2))))
    has_parent = set()
    for child, parent in edges:
        if child in nodes and parent in nodes:
            nodes[parent].children.append(nodes[child])
            has_parent.add(child)
    return [n for i, n in sorted(nodes.items()) if i not in has_parent]


def _bracket_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the contents of each top-level ``[...]`` group of a description."""
    spans, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            if depth == 0:
                start = i + 1
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
            if depth == 0:
                spans.append((start, i))
    return spans


def _bracket_groups(text: str) -> list[str]:
    """Top-level ``[...]`` groups of a node description, without the brackets."""
    return [text[a:b] for a, b in _bracket_spans(text)]


def is_global_sort(desc: str) -> bool:
    """``Sort [order], true, 0``: the second argument of SortExec is ``global``."""
    spans = _bracket_spans(desc)
    rest = desc[spans[0][1] + 1:] if spans else ""
    return re.match(r"\s*,\s*true\b", rest) is not None


def aggregate_keys(desc: str) -> str | None:
    """The ``keys=[...]`` of an aggregate's description, or None if it has none."""
    at = desc.find("keys=[")
    if at < 0:
        return None
    groups = _bracket_groups(desc[at + len("keys="):])
    return groups[0] if groups else None


def limit_of(node: Node) -> int | None:
    """The row limit of a limit node (``CollectLimit 10``, ``TakeOrderedAndProject(limit=10``)."""
    m = re.search(r"limit=(\d+)", node.desc) or re.match(rf"{node.name}\s+(-?\d+)", node.desc)
    return int(m.group(1)) if m else None


_SORT_ORDER = re.compile(r"\b(ASC|DESC) NULLS (FIRST|LAST)\b")


def window_partition_spec(desc: str) -> str:
    """The partition keys of a ``Window`` or ``WindowGroupLimit`` description ("" if none).

    Spark leaves empty lists out of a node's string: a partitioned window prints as
    ``Window [exprs], [partitionSpec], [orderSpec]``, an unpartitioned one as ``Window [exprs],
    [orderSpec]`` (``WindowGroupLimit [partitionSpec], [orderSpec], fn, limit, mode``). The
    order list is told apart by its ``ASC/DESC NULLS FIRST/LAST`` entries.
    """
    groups = _bracket_groups(desc)
    lists = groups if desc.startswith("WindowGroupLimit") else groups[1:]
    if lists and not _SORT_ORDER.search(lists[0]):
        return lists[0]
    return ""


def _mentions_account(text: str) -> bool:
    return re.search(rf"\b{ACCOUNT_KEY}#", text) is not None


_LOCATION_RE = re.compile(r"Location: \w+(?:\(\d+ paths\))?\[([^\]]*)\]")


class Reduction:
    """Decides, with memoisation per node, whether a subtree is reduced (see module doc).

    Args:
        small_limit: a limit of at most this many rows reduces its input.
        local_scans: descriptions of scans of DataFrames built from driver data
            (``Scan ExistingRDD[a#1,b#2]`` of ``createDataFrame(list)``, see PlanRecorder).
        small_tables: names of tables (the last directory of their location) whose rows are
            not accounts nor account events (metrics, summaries, logs): reading them is
            reduced.
    """

    def __init__(self, small_limit: int, local_scans: Iterable[str] = (),
                 small_tables: Iterable[str] = ()) -> None:
        self.small_limit = small_limit
        self.local_scans = frozenset(local_scans)
        self.small_tables = frozenset(small_tables)
        self._memo: dict[int, bool] = {}

    def is_metadata_leaf(self, node: Node) -> bool:
        """A leaf whose rows are driver data, Delta log metadata or a small table."""
        desc = node.desc
        if (desc.startswith(LOCAL_LEAVES) or node.name in LOCAL_LEAVES or desc in self.local_scans
                or "_delta_log" in desc or "DeltaLogFileIndex" in desc):
            return True
        m = _LOCATION_RE.search(desc)
        if m and self.small_tables:
            paths = [p.strip().rstrip("/") for p in m.group(1).split(",")]
            return all(p.rsplit("/", 1)[-1] in self.small_tables for p in paths if p)
        return False

    def reduced(self, node: Node) -> bool:
        key = id(node)
        if key not in self._memo:
            self._memo[key] = self._reduced(node)
        return self._memo[key]

    def _reduced(self, node: Node) -> bool:
        if node.name in AGGREGATES:
            keys = aggregate_keys(node.desc)
            if keys is not None and not _mentions_account(keys):
                return True
        elif node.name in LIMITS:
            n = limit_of(node)
            if n is not None and 0 <= n <= self.small_limit:
                return True
        if not node.children:
            return self.is_metadata_leaf(node)
        return all(self.reduced(c) for c in node.children)


# --------------------------------------------------------------------------- recording


@dataclass
class Execution:
    """One SQL execution (or, with ``execution_id`` None, the input plan of an ML fit)."""

    execution_id: int | None
    root_execution_id: int | None
    description: str
    details: str
    roots: list[Node]
    token: int | None = None
    error: str | None = None

    @property
    def call_site(self) -> str:
        """Where it came from: the Python site of the wrapped call, or Spark's description."""
        first = self.details.split("\n", 1)[0]
        if _TOKEN_RE.match(first):
            return _TOKEN_RE.sub("", first)
        return f"(no wrapped Python call) {self.description}"

    @property
    def stack(self) -> str:
        """The project frames of the wrapped call (innermost first), if any."""
        head, _, rest = self.details.partition("\n")
        return rest if _TOKEN_RE.match(head) else ""

    def nodes(self) -> Iterator[Node]:
        for root in self.roots:
            yield from root.walk()

    def label(self) -> str:
        what = (f"execution {self.execution_id}" if self.execution_id is not None
                else "ML fit input")
        return f"{what} [{self.call_site}]"


@dataclass
class Collected:
    """What one collecting action brought to the driver."""

    token: int
    action: str
    call_site: str
    stack: str
    columns: tuple[str, ...]
    rows: int | None = None


@dataclass
class Recording:
    """Every execution started inside a :class:`PlanRecorder` block, and its collects."""

    executions: list[Execution]
    collected: list[Collected]
    first_id: int
    last_id: int
    missing_ids: list[int]
    local_scans: frozenset[str] = frozenset()
    read_seconds: float = 0.0   # time spent reading the status store after the block

    def by_token(self, token: int) -> list[Execution]:
        return [e for e in self.executions if e.token == token]

    def collect_execution(self, c: Collected) -> Execution | None:
        """The execution of a collecting action: its last top-level execution."""
        top = [e for e in self.by_token(c.token)
               if e.execution_id is not None and e.root_execution_id == e.execution_id]
        return top[-1] if top else None


class _State(threading.local):
    depth = 0
    tag = ""        # the callSite.long of the outermost wrapped call running
    token: int | None = None


_state = _State()
_counter = itertools.count(1)


def _library_dirs() -> tuple[str, ...]:
    dirs = [str(Path(__file__).resolve())]
    for mod in ("pyspark", "py4j", "delta"):
        m = sys.modules.get(mod)
        if m is not None and getattr(m, "__file__", None):
            dirs.append(str(Path(m.__file__).resolve().parent) + os.sep)
    dirs.append(str(Path(functools.__file__).resolve().parent) + os.sep)   # stdlib
    return tuple(dirs)


def _site(frame: Any, skip: tuple[str, ...]) -> tuple[str, str]:
    """(first frame outside the libraries as ``file:line (function)``, project stack)."""
    site, stack = None, []
    while frame is not None:
        path = frame.f_code.co_filename
        resolved = os.path.realpath(path)
        if not path.startswith("<") and not resolved.startswith(skip):
            try:
                shown = str(Path(resolved).relative_to(ROOT))
            except ValueError:
                shown = path
            here = f"{shown}:{frame.f_lineno} ({frame.f_code.co_name})"
            if site is None:
                site = here
            if resolved.startswith(str(ROOT)) and len(stack) < 8:
                stack.append(here)
        frame = frame.f_back
    return site or "?", "\n".join(stack)


class PlanRecorder:
    """Context manager: ``with PlanRecorder(spark) as rec: ...``; then ``rec.recording``.

    Reads every SQL execution that starts inside the block from Spark's status store (which
    keeps the last ``spark.sql.ui.retainedExecutions``, 1000 by default; the recording says
    which ids it could not find). Only one recorder may be active at a time.
    """

    _active: PlanRecorder | None = None

    def __init__(self, spark: Any) -> None:
        self.spark = spark
        self.recording: Recording | None = None
        self._patched: list[tuple[type, str, Any, bool]] = []
        self._collected: list[Collected] = []
        self._fit_inputs: list[Execution] = []
        self._local_scans: set[str] = set()
        self.error: BaseException | None = None
        self._first_id = 0
        self._skip = ()

    # -- the status store
    def _store(self) -> Any:
        return self.spark._jsparkSession.sharedState().statusStore()

    def _drain(self) -> None:
        self.spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty()

    def _last_id(self) -> int:
        store = self._store()
        n = int(store.executionsCount())
        if n == 0:
            return -1
        last = store.executionsList(n - 1, 1)
        return int(last.apply(0).executionId()) if last.size() else -1

    def _empty_map(self) -> Any:
        jvm = self.spark.sparkContext._jvm
        return getattr(getattr(jvm.scala.collection.immutable, "Map$"), "MODULE$").empty()

    def _read(self, execution_id: int) -> Execution | None:
        store = self._store()
        found = store.execution(execution_id)
        if found.isEmpty():
            return None
        ui = found.get()
        error = ui.errorMessage()
        dot = store.planGraph(execution_id).makeDotFile(store.executionMetrics(execution_id))
        details = ui.details() or ""
        token = _TOKEN_RE.match(details)
        return Execution(execution_id=execution_id,
                         root_execution_id=int(ui.rootExecutionId()),
                         description=ui.description() or "", details=details,
                         roots=parse_dot(dot), token=int(token.group(1)) if token else None,
                         error=None if error.isEmpty() else str(error.get()))

    def plan_of(self, jdf: Any) -> list[Node]:
        """The current physical plan of a (Java) DataFrame as a tree."""
        jvm = self.spark.sparkContext._jvm
        plan = jdf.queryExecution().executedPlan()
        info = jvm.org.apache.spark.sql.execution.SparkPlanInfo.fromSparkPlan(plan)
        graph = jvm.org.apache.spark.sql.execution.ui.SparkPlanGraph.apply(info)
        return parse_dot(graph.makeDotFile(self._empty_map()))

    # -- wrappers
    def _wrap(self, cls: type, name: str, kind: str) -> None:
        own = name in cls.__dict__
        # the attribute as defined (classmethod/staticmethod objects, not bound methods)
        raw = next((k.__dict__[name] for k in cls.__mro__ if name in k.__dict__), None)
        if raw is None:
            return
        wrapper_type = type(raw) if isinstance(raw, classmethod | staticmethod) else None
        func = raw.__func__ if wrapper_type is not None else raw
        if not callable(func):
            return
        recorder = self

        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not _state.depth:
                return recorder._call(func, name, kind, args, kwargs)
            # inside another wrapped call: its call site stands; still note fits and
            # driver-made DataFrames
            if kind == "fit":
                recorder._safely(recorder._note_fit_input, args)
            result = func(*args, **kwargs)
            if kind == "local":
                recorder._safely(recorder._note_local,
                                 args[1] if len(args) > 1 else kwargs.get("data"), result)
            return result

        setattr(cls, name, wrapper_type(wrapped) if wrapper_type is not None else wrapped)
        self._patched.append((cls, name, raw, own))

    def _call(self, func: Callable[..., Any], name: str, kind: str, args: tuple,
              kwargs: dict) -> Any:
        token = next(_counter)
        site, stack = _site(sys._getframe(2), self._skip)
        sc = self.spark.sparkContext
        _state.tag, _state.token = f"[plan-check #{token}] {name} at {site}\n{stack}", token
        sc.setLocalProperty("callSite.long", _state.tag)
        _state.depth += 1
        try:
            if kind == "fit":
                self._safely(self._note_fit_input, args)
            result = func(*args, **kwargs)
        finally:
            _state.depth -= 1
            _state.tag, _state.token = "", None
            sc.setLocalProperty("callSite.long", None)
        if kind == "collect":
            noted = self._safely(self._note_collect, token, name, site, stack, args[0], result)
            return result if noted is None else noted
        if kind == "local":
            self._safely(self._note_local, args[1] if len(args) > 1 else kwargs.get("data"),
                         result)
        return result

    def _safely(self, note: Callable[..., Any], *args: Any) -> Any:
        """Run a note-taking helper; a failure of the recorder never fails the code it
        watches (it is kept in ``error`` for the tests)."""
        try:
            return note(*args)
        except Exception as err:
            self.error = self.error or err
            return None

    def _note_local(self, data: Any, df: Any) -> None:
        """Remember the scan of a DataFrame made from driver data (not from an RDD)."""
        if hasattr(data, "_jrdd") or hasattr(data, "_jdf") or not hasattr(df, "_jdf"):
            return
        output = df._jdf.queryExecution().analyzed().output().mkString(",")
        self._local_scans.add(f"Scan ExistingRDD[{output}]")

    def _note_fit_input(self, args: tuple) -> None:
        """Record the plan of the DataFrame a Java estimator is about to train on."""
        dataset = args[1] if len(args) > 1 else None
        jdf = getattr(dataset, "_jdf", None)
        if jdf is None:
            return
        self._fit_inputs.append(Execution(None, None, f"input of {type(args[0]).__name__}.fit",
                                          _state.tag, self.plan_of(jdf), token=_state.token))

    def _note_collect(self, token: int, name: str, site: str, stack: str, df: Any,
                      result: Any) -> Any:
        record = Collected(token, name, site, stack, tuple(df.columns))
        self._collected.append(record)
        if name == "toLocalIterator":
            def counting(it: Iterable[Any]) -> Iterator[Any]:
                record.rows = 0
                for row in it:
                    record.rows += 1
                    yield row
            return counting(result)
        if name in ("first",) or (name == "head" and not isinstance(result, list)):
            record.rows = 0 if result is None else 1
        elif name == "toPandas":
            record.rows, record.columns = len(result), tuple(str(c) for c in result.columns)
        elif name == "toArrow":
            record.rows, record.columns = result.num_rows, tuple(result.column_names)
        else:
            record.rows = len(result)
            if result and hasattr(result[0], "__fields__"):
                record.columns = tuple(result[0].__fields__)
        return result

    def __enter__(self) -> PlanRecorder:
        if PlanRecorder._active is not None:
            raise RuntimeError("a PlanRecorder is already active")
        import importlib

        self._drain()
        self._first_id = self._last_id() + 1
        for module, cls_name, attr, kind in TARGETS:
            try:
                cls = getattr(importlib.import_module(module), cls_name)
            except (ImportError, AttributeError):
                continue
            self._wrap(cls, attr, kind)
        self._skip = _library_dirs()
        PlanRecorder._active = self
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        for cls, name, raw, own in reversed(self._patched):
            if own:
                setattr(cls, name, raw)
            else:
                delattr(cls, name)
        self._patched.clear()
        PlanRecorder._active = None
        if exc_type is not None:
            return          # the block failed: let its error through, record nothing
        try:
            self._harvest()
        except Exception as err:   # reported by the tests that read the recording
            self.error = err

    def _harvest(self) -> None:
        """Read every execution of the block from the status store into ``recording``."""
        started = time.monotonic()
        self._drain()
        last = self._last_id()
        executions, missing = [], []
        for i in range(self._first_id, last + 1):
            e = self._read(i)
            if e is None:
                missing.append(i)
            else:
                executions.append(e)
        self.recording = Recording(executions + self._fit_inputs, self._collected,
                                   self._first_id, last, missing,
                                   frozenset(self._local_scans),
                                   time.monotonic() - started)


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Violation:
    """One broken rule: where (call site, execution) and what (the offending plan fragment)."""

    rule: str
    where: str
    what: str
    fragment: str
    stack: str = ""

    def __str__(self) -> str:
        text = f"[{self.rule}] {self.what}\n  at {self.where}"
        if self.stack:
            text += "\n  called from:\n    " + self.stack.replace("\n", "\n    ")
        return text + "\n  plan fragment:\n    " + self.fragment.replace("\n", "\n    ")


def _single_partition_issue(node: Node, reduction: Reduction) -> str | None:
    """What is wrong with a node that funnels row-level data into one partition, if so."""
    row_level = node.children and not all(reduction.reduced(c) for c in node.children)
    if not row_level:
        return None
    desc = node.desc
    if node.name == "Exchange" and desc.startswith("Exchange SinglePartition"):
        return "all rows go through one partition (Exchange SinglePartition over row-level data)"
    if node.name == "Exchange" and desc.startswith("Exchange rangepartitioning"):
        return "global sort: range-partitioning exchange over row-level data"
    if node.name == "Coalesce" and re.match(r"Coalesce 1\b", desc):
        return "all rows go through one task (Coalesce 1 over row-level data)"
    if node.name == "Sort" and is_global_sort(desc):
        return "global sort (Sort with global ordering) over row-level data"
    if node.name in WINDOWS:
        spec = window_partition_spec(desc)
        if not spec.strip():
            return f"{node.name} without partition keys over row-level data"
    return None


def check_execution(execution: Execution, reduction: Reduction) -> list[Violation]:
    """The single-partition and python-udf rules over one execution's plan."""
    found: dict[tuple[str, str], Violation] = {}
    for node in execution.nodes():
        if node.name in PYTHON_NODES or PYTHON_NODE_PATTERN.search(node.name):
            v = Violation("python-udf", execution.label(),
                          f"Python evaluation node {node.name}", node.render(max_depth=2),
                          execution.stack)
            found.setdefault((v.rule, node.desc), v)
            continue
        issue = _single_partition_issue(node, reduction)
        if issue:
            v = Violation("single-partition", execution.label(), issue,
                          node.render(max_depth=3), execution.stack)
            found.setdefault((v.rule, node.desc), v)
    return list(found.values())


def _site_key(call_site: str) -> str:
    """``cvm_spark/segments/tiers.py:30 (fit_abc)`` -> ``cvm_spark/segments/tiers.py (fit_abc)``."""
    return re.sub(r":\d+ ", " ", call_site, count=1)


def check_collects(recording: Recording, accounts: int, reduction: Reduction,
                   bounds: dict[str, int] | None = None) -> list[Violation]:
    """The account-collect rule over every collecting action of a recording.

    Args:
        accounts: accounts scored by the run; a collect must return fewer rows ...
        bounds: ... unless its site (``file (function)``) is listed here with a bound that
            the code itself enforces or that the config fixes (then: at most that many).
    """
    bounds = bounds or {}
    out = []
    for c in recording.collected:
        where = f"{c.action} at {c.call_site}"
        bound = bounds.get(_site_key(c.call_site))
        if c.rows is not None and c.rows >= accounts and (bound is None or c.rows > bound):
            limit = f"accounts: {accounts}" + (f", bound: {bound}" if bound else "")
            out.append(Violation("account-collect", where,
                                 f"{c.rows} rows reached the driver ({limit})",
                                 f"columns {list(c.columns)}", c.stack))
        if ACCOUNT_KEY in c.columns:
            out.append(Violation("account-collect", where,
                                 f"the collected rows carry {ACCOUNT_KEY}",
                                 f"columns {list(c.columns)}", c.stack))
        execution = recording.collect_execution(c)
        if execution is None:
            out.append(Violation("account-collect", where,
                                 "no SQL execution recorded for this collect (cannot check "
                                 "its plan)", "-", c.stack))
            continue
        for root in execution.roots:
            if not reduction.reduced(root):
                out.append(Violation(
                    "account-collect", f"{where} (execution {execution.execution_id})",
                    "the collected rows are row-level: no aggregate (not keyed by "
                    f"{ACCOUNT_KEY}) or limit <= {reduction.small_limit} between the "
                    "account-level scans and the driver",
                    root.render(max_depth=6), c.stack))
    return out


def check_recording(recording: Recording, accounts: int, small_limit: int = 1000,
                    small_tables: Iterable[str] = (),
                    bounds: dict[str, int] | None = None) -> list[Violation]:
    """Every rule over every execution and collect of a recording.

    Args:
        recording: what a :class:`PlanRecorder` saw.
        accounts: the number of accounts the run scored.
        small_limit: a limit of at most this many rows counts as a reduction.
        small_tables: tables whose rows are not account-level (see :class:`Reduction`).
        bounds: collect sites allowed up to a fixed bound (see :func:`check_collects`).

    Returns:
        The violations, one per rule and plan fragment.
    """
    reduction = Reduction(small_limit, recording.local_scans, small_tables)
    out: list[Violation] = []
    seen: set[tuple[str, str, str]] = set()
    for execution in recording.executions:
        for v in check_execution(execution, reduction):
            key = (v.rule, v.what, v.fragment)
            if key not in seen:   # a cached plan shows up in every query that reads it
                seen.add(key)
                out.append(v)
    return out + check_collects(recording, accounts, reduction, bounds)
