"""What every layer uses: atomic files, content hashes, reading images, colours, signals, COCO RLE.
"""
