"""Counters of a per-CPU array summed over CPUs, read in bulk.

A statistics report used to read real_stats one slot at a time: at
10,000 listeners x 16 members that is 160,000 lookups, each building a
ctypes struct per CPU, 3.7-6.5 s per report.  Here the slots in use are
read with BPF_MAP_LOOKUP_BATCH over the range they span, a chunk at a
time, and each counter is summed over CPUs from strided slices of the
packed buffer: no Python object per slot per CPU, and the sums are kept
in arrays of 8-byte words rather than lists of ints.
"""

import array
import errno
import operator

from amphora_agent.dataplane import libbpf

# Slots per batch lookup: 8192 x 32-byte counters x CPUs stays a few
# hundred kB per chunk on hosts with tens of CPUs.
CHUNK = 8192


class Totals:
    """Per-slot sums over CPUs of a per-CPU array's counter fields."""

    def __init__(self, fields, first, columns):
        self.fields = fields
        self._first = first
        self._columns = columns

    def row(self, index):
        """{field: sum over CPUs} of slot `index` (one of those read)."""
        at = index - self._first
        return {name: int(column[at])
                for name, column in zip(self.fields, self._columns)}


def totals(percpu_map, cls, indices):
    """Totals of slots `indices` of `percpu_map` (values of struct `cls`,
    all fields 64-bit counters; 'pad' skipped), read in bulk; per slot
    if this kernel has no batch lookup for the map."""
    fields = [name for name, _ in cls._fields_ if name != 'pad']
    indices = list(indices)
    if not indices:
        return Totals(fields, 0, [[] for _ in fields])
    first, end = min(indices), max(indices) + 1
    try:
        columns = _bulk_columns(percpu_map, cls, fields, first, end)
    except libbpf.BpfError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP,
                             libbpf.ENOTSUPP):
            raise
        return per_slot_totals(percpu_map, cls, indices)
    return Totals(fields, first, columns)


def per_slot_totals(percpu_map, cls, indices):
    """The same totals, one lookup per slot (the reference the bulk read
    is tested against, and the fallback)."""
    fields = [name for name, _ in cls._fields_ if name != 'pad']
    indices = list(indices)
    first = min(indices) if indices else 0
    end = max(indices) + 1 if indices else 0
    columns = [[0] * (end - first) for _ in fields]
    for index in indices:
        for raw in percpu_map.lookup_percpu(index.to_bytes(4, 'little')):
            item = cls.from_bytes(raw)
            for column, name in zip(columns, fields):
                column[index - first] += getattr(item, name)
    return Totals(fields, first, columns)


def _bulk_columns(percpu_map, cls, fields, first, end):
    ncpus = percpu_map.value_buffer_size // percpu_map.percpu_stride
    words_per_cpu = percpu_map.percpu_stride // 8
    step = ncpus * words_per_cpu    # 8-byte words per slot, all CPUs
    offsets = [getattr(cls, name).offset // 8 for name in fields]
    columns = [array.array('Q') for _ in fields]
    position = first
    while position < end:
        # The batch starts after the key passed in: slot position - 1.
        in_batch = (None if position == 0 else
                    (position - 1).to_bytes(8, 'little'))
        batch = percpu_map.lookup_batch(min(CHUNK, end - position),
                                        in_batch)
        if not batch.count:
            break
        words = memoryview(batch.values).cast('Q')
        for i, offset in enumerate(offsets):
            columns[i] = _extend(columns[i], _summed(words, offset, step,
                                                     words_per_cpu, ncpus))
        position += batch.count
        if batch.done:
            break
    if position < end:
        raise libbpf.BpfError(errno.EIO, 'batch lookup of %s ended at slot '
                              '%d of %d' % (percpu_map.name, position, end))
    return columns


def _summed(words, offset, step, words_per_cpu, ncpus):
    """The field at `offset` of every slot in `words`, summed over CPUs
    (Python ints: the sum of 64-bit counters may exceed 64 bits)."""
    total = words[offset::step].tolist()
    for cpu in range(1, ncpus):
        start = cpu * words_per_cpu + offset
        total = list(map(operator.add, total, words[start::step]))
    return total


def _extend(column, values):
    try:
        column.extend(array.array('Q', values))
    except OverflowError:   # a sum beyond 64 bits: keep Python ints
        column = list(column)
        column.extend(values)
    return column
