"""Chip batch event objects (PROTOCOL.md section 4, "Chip batches").

Shape only: a serial list is distinct and as long as the quantity it describes, a split
names distinct new ids. Whether the batch's state allows the event is `ledger.custody`'s.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from ledger.wire.types import BatchEventBase, Country, EventBase, Id, Quantity, Strict, Text

Serial = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")]
Serials = Annotated[list[Serial], Field(min_length=1)]


def check_serials(serials: list[str] | None, quantity: int) -> None:
    if serials is None:
        return
    if len(set(serials)) != len(serials):
        raise ValueError("serials must be distinct")
    if len(serials) != quantity:
        raise ValueError(f"{len(serials)} serials for a quantity of {quantity}; they must match")


class BatchFabricated(EventBase):
    type: Literal["batch.fabricated"]
    batch: Id
    model: Id
    quantity: Quantity
    country: Country
    serials: Serials | None = None

    @model_validator(mode="after")
    def _serials(self) -> BatchFabricated:
        check_serials(self.serials, self.quantity)
        return self


class BatchExported(BatchEventBase):
    type: Literal["batch.exported"]
    batch: Id
    to: Id
    destination: Country
    license: Id | None = None
    via: Annotated[list[Country], Field(min_length=1, max_length=32)] | None = None


class BatchDelivered(BatchEventBase):
    type: Literal["batch.delivered"]
    batch: Id
    site: Id
    quantity: Quantity
    serials: Serials | None = None

    @model_validator(mode="after")
    def _serials(self) -> BatchDelivered:
        check_serials(self.serials, self.quantity)
        return self


class BatchInstalled(BatchEventBase):
    type: Literal["batch.installed"]
    batch: Id
    site: Id


class BatchRelocated(BatchEventBase):
    type: Literal["batch.relocated"]
    batch: Id
    site: Id


class BatchTransferred(BatchEventBase):
    type: Literal["batch.transferred"]
    batch: Id
    to: Id
    site: Id | None = None
    license: Id | None = None


class SplitPart(Strict):
    batch: Id
    quantity: Quantity
    serials: Serials | None = None

    @model_validator(mode="after")
    def _serials(self) -> SplitPart:
        check_serials(self.serials, self.quantity)
        return self


class BatchSplit(BatchEventBase):
    type: Literal["batch.split"]
    batch: Id
    into: Annotated[list[SplitPart], Field(min_length=2, max_length=1000)]

    @model_validator(mode="after")
    def _new_ids(self) -> BatchSplit:
        ids = [part.batch for part in self.into]
        if len(set(ids)) != len(ids) or self.batch in ids:
            raise ValueError("the parts of a split need distinct new batch ids")
        return self


class BatchDecommissioned(BatchEventBase):
    type: Literal["batch.decommissioned"]
    batch: Id
    reason: Text


class BatchReportedLost(BatchEventBase):
    type: Literal["batch.reported_lost"]
    batch: Id
    reason: Text
