"""Routes: /api/v1/images"""

from typing import Literal

from fastapi import APIRouter, BackgroundTasks, Query, Response, status

from controller.api.deps import AdminDep, DbDep, PageDep, SettingsDep
from controller.schemas import images as schema
from controller.services import image_exports
from controller.services import images as service

router = APIRouter(prefix="/images", tags=["images"])


@router.post("", response_model=schema.Image, status_code=status.HTTP_202_ACCEPTED,
             summary="Import an image, or make one from a snapshot or an instance (asynchronous: "
             "Creating, then Available or Error)")
def create_image(_: AdminDep, db: DbDep, settings: SettingsDep, req: schema.ImageCreate,
                 background: BackgroundTasks) -> schema.Image:
    if req.snapshot_id or req.instance_id:  # exported by the snapshot's host
        return image_exports.create_image_from(db, req)
    image = service.create_image(db, settings, req)
    background.add_task(service.run_import, db, settings, image.id)
    return image


@router.get("", response_model=schema.ImageList, summary="List images")
def list_images(_: AdminDep, db: DbDep, page: PageDep,
                status_: Literal["Creating", "Available", "Error"] | None = Query(
                    None, alias="status", description="Only this status",
                    examples=["Available"])) -> schema.ImageList:
    return service.list_images(db, page.max_results, page.next_token, status_)


@router.get("/{image_id}", response_model=schema.Image, summary="Show an image")
def get_image(_: AdminDep, db: DbDep, image_id: str) -> schema.Image:
    return service.get_image(db, image_id)


@router.delete("/{image_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete an image (refused while in use)")
def delete_image(_: AdminDep, db: DbDep, image_id: str) -> Response:
    service.delete_image(db, image_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
