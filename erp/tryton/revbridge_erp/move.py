"""account.move gets revbridge_key: the deterministic journal key revbridge posts under.

The pair (company, revbridge_key) is unique in the database itself, so a second move
with the same key is refused by the ERP whatever the caller does. Moves without a key
(NULL) are not constrained.
"""

from trytond.model import Index, Unique, fields
from trytond.pool import PoolMeta
from trytond.pyson import Eval
from trytond.rpc import RPC


class Move(metaclass=PoolMeta):
    __name__ = 'account.move'

    revbridge_key = fields.Char(
        "Revbridge Key", strip=False,
        states={
            # settable on creation, frozen once the record exists
            'readonly': Eval('id', -1) >= 0,
            },
        help="Idempotency key of the revbridge journal this move books.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('revbridge_key_unique',
                Unique(t, t.company, t.revbridge_key),
                'revbridge_erp.msg_revbridge_key_unique'),
            ]
        cls._sql_indexes.add(
            Index(t, (t.revbridge_key, Index.Equality())))
        cls.__rpc__.update({
                'revbridge_create_post': RPC(
                    readonly=False, result=lambda moves: [m.id for m in moves],
                    fresh_session=True),
                })

    @classmethod
    def revbridge_create_post(cls, vlist):
        """Create the moves and post them in one transaction (one RPC call).

        Either every move of the call is created *and* posted, or nothing is: a
        revbridge_key can never be left on a draft move by a half-done call.
        """
        moves = cls.create(vlist)
        cls.post(moves)
        return moves

    @classmethod
    def copy(cls, moves, default=None):
        # A copy (cancel, duplicate) is another move: it never inherits the key.
        default = dict(default or {})
        default.setdefault('revbridge_key', None)
        return super().copy(moves, default=default)
