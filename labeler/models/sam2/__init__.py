"""models.sam2"""
