"""The /country resource."""

from fastapi import APIRouter, HTTPException, Path, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from src.db import SessionDep
from src.errors import ErrorBody
from src.models import Country
from src.schemas import CountryCreate, CountryRead

router = APIRouter(prefix="/country", tags=["country"])

UNIQUE_VIOLATION = "23505"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CountryRead,
    responses={409: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
async def create_country(body: CountryCreate, session: SessionDep) -> Country:
    country = Country(**body.model_dump())
    session.add(country)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        # The unique constraints decide, so concurrent inserts cannot both win.
        if getattr(exc.orig, "sqlstate", None) == UNIQUE_VIOLATION:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"a country with alpha2 {body.alpha2!r} or alpha3 {body.alpha3!r} already exists",
            ) from None
        raise
    return country


@router.get(
    "/{code}",
    response_model=CountryRead,
    responses={404: {"model": ErrorBody}},
)
async def get_country(
    session: SessionDep,
    code: str = Path(pattern=r"^[A-Za-z]{2}$", examples=["GB"]),
) -> Country:
    country = await session.scalar(select(Country).where(Country.alpha2 == code.upper()))
    if country is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"country {code.upper()!r} not found")
    return country
