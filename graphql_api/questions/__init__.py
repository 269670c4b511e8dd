"""The domain questions of docs/domain.md ("The questions"), answered in SQL, one module per
family. Each module holds its result types, its SQL and its root fields, a `*Query` type that
`graphql_api.schema` merges into `Query`:

- `history.py`: custody, 6 (`ownershipHistory`, `serialProvenance`) and 8 (`holdings`);
- `claims.py`: a beneficiary's retirements, 1 (`retirementStatement`) and 5 (`hourlyMatching`);
- `compliance.py`: the checks of `complianceReport`, 2, 3, 4, 7, 9, 10 and 11;
- `market.py`: market data, 12 (`marketStats`);
- `search.py`: search, 13 (`search`).

`grouping.py` holds what several share: totals by attribute in one GROUPING SETS statement.
Besides it, one arrow runs between them: `compliance` reads the statement's retirements
(`claims`) and an owner's certificates (`history`).
"""
