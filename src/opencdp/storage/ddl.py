"""Render ``schema.Table`` declarations as CREATE TABLE expressions via sqlglot."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlglot import exp

from opencdp.storage.schema import Column, T, Table

TypeMapper = Callable[[Column], exp.DataType]


def type_mapper(types: Mapping[T, str], dialect: str, nullable_wrapper: bool) -> TypeMapper:
    """Build a column -> engine type function from a logical type table.

    ``nullable_wrapper`` engines (ClickHouse) spell nullability in the type,
    ``Nullable(T)``; the others use a NOT NULL constraint.
    """

    def to_type(column: Column) -> exp.DataType:
        spelled = types[column.type]
        if nullable_wrapper and column.nullable:
            if spelled.startswith("LowCardinality("):
                spelled = f"LowCardinality(Nullable({spelled[len('LowCardinality('):-1]}))"
            else:
                spelled = f"Nullable({spelled})"
        return exp.DataType.build(spelled, dialect=dialect)

    return to_type


def create_table(
    table: Table,
    to_type: TypeMapper,
    *,
    not_null_constraints: bool,
    primary_key: bool,
    properties: list[exp.Expression] | None = None,
) -> exp.Create:
    columns: list[exp.Expression] = []
    for column in table.columns:
        constraints = []
        if not_null_constraints and not column.nullable:
            constraints.append(exp.ColumnConstraint(kind=exp.NotNullColumnConstraint()))
        columns.append(
            exp.ColumnDef(this=exp.to_identifier(column.name), kind=to_type(column), constraints=constraints or None)
        )
    if primary_key and table.key:
        columns.append(exp.PrimaryKey(expressions=[exp.to_identifier(k) for k in table.key]))
    return exp.Create(
        this=exp.Schema(this=exp.to_table(table.name), expressions=columns),
        kind="TABLE",
        exists=True,
        properties=exp.Properties(expressions=properties) if properties else None,
    )


def order_by(columns: tuple[str, ...]) -> exp.Order:
    key: exp.Expression = (
        exp.column(columns[0]) if len(columns) == 1 else exp.Tuple(expressions=[exp.column(c) for c in columns])
    )
    return exp.Order(expressions=[exp.Ordered(this=key, nulls_first=False)])
